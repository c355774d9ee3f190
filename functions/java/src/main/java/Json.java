import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.StreamWriteFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.NumericNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;

/** Strict JSON in, compact UTF-8 JSON out (Jackson's tree model), and the response bodies. */
final class Json {
    /** Numbers outside float64 range (1e400) are refused while parsing instead of becoming Infinity. */
    private static final class FiniteNodes extends JsonNodeFactory {
        private static final long serialVersionUID = 1L;

        FiniteNodes() {
            super(false);
        }

        @Override
        public NumericNode numberNode(double v) {
            if (!Double.isFinite(v)) {
                throw new IllegalArgumentException("number out of float64 range");
            }
            return super.numberNode(v);
        }

        @Override
        public NumericNode numberNode(float v) {
            return numberNode((double) v);
        }
    }

    static final JsonNodeFactory NODES = new FiniteNodes();
    private static final JsonFactory FACTORY = JsonFactory.builder()
            .enable(StreamReadFeature.USE_FAST_DOUBLE_PARSER)
            .enable(StreamWriteFeature.USE_FAST_DOUBLE_WRITER) // shortest round-trip doubles (Schubfach)
            .build();
    private static final ObjectMapper MAPPER = new ObjectMapper(FACTORY)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS) // one value, no trailing data
            .setNodeFactory(NODES);
    private static final ObjectReader READER = MAPPER.readerFor(JsonNode.class);

    private Json() {}

    /** A request body or event: strict JSON (no NaN/Infinity, no trailing data); empty means {}. */
    static JsonNode parse(byte[] body, int length) {
        if (isBlank(body, length)) {
            return NODES.objectNode();
        }
        try {
            JsonNode node = READER.readTree(body, 0, length);
            if (node == null || node.isMissingNode()) {
                throw new BadRequest("body is not valid JSON: no value");
            }
            return node;
        } catch (IOException | RuntimeException e) {
            if (e instanceof BadRequest) {
                throw (BadRequest) e;
            }
            String msg = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
            int nl = msg.indexOf('\n');
            throw new BadRequest("body is not valid JSON: " + (nl >= 0 ? msg.substring(0, nl) : msg));
        }
    }

    private static boolean isBlank(byte[] b, int length) {
        for (int i = 0; i < length; i++) {
            byte c = b[i];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != 0x0b && c != 0x0c) {
                return false;
            }
        }
        return true;
    }

    /** The response envelope of CONTRACT.md §2. */
    static byte[] envelope(String workload, boolean cold, double initMs, double handlerMs, JsonNode result)
            throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        try (JsonGenerator g = MAPPER.createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("runtime", Facts.RUNTIME);
            g.writeStringField("workload", workload);
            g.writeBooleanField("cold", cold);
            g.writeStringField("instance", Facts.INSTANCE);
            g.writeNumberField("init_ms", initMs);
            g.writeNumberField("handler_ms", handlerMs);
            g.writeFieldName("result");
            g.writeTree(result);
            g.writeEndObject();
        }
        return out.toByteArray();
    }

    /** {"error": message, "runtime", "instance"}: every non-200 HTTP body. */
    static byte[] error(String message) {
        ObjectNode o = NODES.objectNode();
        o.put("error", message);
        o.put("runtime", Facts.RUNTIME);
        o.put("instance", Facts.INSTANCE);
        return bytes(o);
    }

    private static byte[] bytes(JsonNode node) {
        try {
            return MAPPER.writeValueAsBytes(node);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
