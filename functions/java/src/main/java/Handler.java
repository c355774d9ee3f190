import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * AWS Lambda handler {@code Handler::handleRequest}, run by AWS's runtime interface client
 * (aws-lambda-java-runtime-interface-client). Event {"workload", "params"}; returns the envelope;
 * an unknown workload or bad params throw BadRequest (errorType "BadRequest").
 */
public final class Handler implements RequestStreamHandler {
    static {
        // The client loads this class just before it starts polling the Runtime API: ready.
        Facts.ready();
    }

    @Override
    public void handleRequest(InputStream in, OutputStream out, Context context) throws IOException {
        long t0 = System.nanoTime();
        boolean cold = Facts.takeCold();
        byte[] raw = in.readAllBytes();
        JsonNode event = Json.parse(raw, raw.length);
        if (!event.isObject()) {
            throw new BadRequest("event must be a JSON object {\"workload\", \"params\"}");
        }
        JsonNode workload = event.get("workload");
        if (workload == null || !workload.isTextual()) {
            throw new BadRequest("event.workload must be a string");
        }
        JsonNode params = event.get("params");
        if (params == null || params.isNull()) {
            params = Json.NODES.objectNode();
        }
        JsonNode result = Workloads.run(workload.textValue(), params);
        double handlerMs = (System.nanoTime() - t0) / 1e6;
        out.write(Json.envelope(workload.textValue(), cold, Facts.initMs(), handlerMs, result));
    }
}
