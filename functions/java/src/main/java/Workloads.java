import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.security.DigestException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Locale;

/**
 * The seven workloads of functions/CONTRACT.md §3, shared by Server (HTTP) and Handler (Lambda).
 * Each returns the contract's result or throws BadRequest; nothing here stops the process on
 * user input.
 */
final class Workloads {
    static final long MAX_SAFE_INT = 1L << 53;

    private Workloads() {}

    /** Runs a workload on already-parsed params (sleep blocks this thread: Thread.sleep). */
    static JsonNode run(String workload, JsonNode params) {
        if (!params.isObject()) {
            throw new BadRequest("params must be a JSON object");
        }
        switch (workload) {
            case "echo": return echo(params);
            case "transform": return transform(params);
            case "hash": return hash(params);
            case "matmul": return matmul(params);
            case "alloc": return alloc(params);
            case "sleep": return sleep(params);
            case "validate": return validate(params);
            default: throw new BadRequest("unknown workload: '" + workload + "'");
        }
    }

    // ------------------------------------------------------------------ param helpers

    /** CONTRACT "integer": a number (not a boolean) with an integral value, |v| <= 2^53; else null. */
    static Long asInt(JsonNode v) {
        if (v == null || !v.isNumber()) {
            return null;
        }
        if (v.isIntegralNumber()) {
            if (!v.canConvertToLong()) {
                return null;
            }
            long l = v.longValue();
            return l >= -MAX_SAFE_INT && l <= MAX_SAFE_INT ? l : null;
        }
        double d = v.doubleValue();
        if (!Double.isFinite(d) || d != Math.rint(d) || Math.abs(d) > MAX_SAFE_INT) {
            return null;
        }
        return (long) d;
    }

    /** CONTRACT "number": a finite number (not a boolean); else null. */
    static Double asNum(JsonNode v) {
        if (v == null || !v.isNumber()) {
            return null;
        }
        double d = v.doubleValue(); // a huge integer becomes Infinity: refused
        return Double.isFinite(d) ? d : null;
    }

    private static JsonNode get(JsonNode p, String key) {
        JsonNode v = p.get(key);
        if (v == null) {
            throw new BadRequest("missing param '" + key + "'");
        }
        return v;
    }

    private static long intParam(JsonNode p, String key, long lo, long hi) {
        Long i = asInt(get(p, key));
        if (i == null) {
            throw new BadRequest("param '" + key + "' must be an integer");
        }
        if (i < lo || i > hi) {
            throw new BadRequest("param '" + key + "' must be in [" + lo + ", " + hi + "]");
        }
        return i;
    }

    private static String strParam(JsonNode p, String key) {
        JsonNode v = get(p, key);
        if (!v.isTextual()) {
            throw new BadRequest("param '" + key + "' must be a string");
        }
        return v.textValue();
    }

    // ------------------------------------------------------------------ workloads

    static JsonNode echo(JsonNode p) {
        return get(p, "payload");
    }

    private static final class Kept {
        final long id;
        final String nameUpper;
        final double total;

        Kept(long id, String nameUpper, double total) {
            this.id = id;
            this.nameUpper = nameUpper;
            this.total = total;
        }
    }

    static JsonNode transform(JsonNode p) {
        JsonNode records = get(p, "records");
        if (!records.isArray()) {
            throw new BadRequest("param 'records' must be an array");
        }
        Double minTotal = asNum(get(p, "min_total"));
        if (minTotal == null) {
            throw new BadRequest("param 'min_total' must be a number");
        }
        List<Kept> kept = new ArrayList<>();
        for (int idx = 0; idx < records.size(); idx++) {
            JsonNode r = records.get(idx);
            if (!r.isObject()) {
                throw new BadRequest("records[" + idx + "] must be an object");
            }
            Long id = asInt(r.get("id"));
            if (id == null) {
                throw new BadRequest("records[" + idx + "].id must be an integer");
            }
            JsonNode name = r.get("name");
            if (name == null || !name.isTextual()) {
                throw new BadRequest("records[" + idx + "].name must be a string");
            }
            Double price = asNum(r.get("price"));
            if (price == null || price < 0) {
                throw new BadRequest("records[" + idx + "].price must be a number >= 0");
            }
            Long qty = asInt(r.get("qty"));
            if (qty == null || qty < 0) {
                throw new BadRequest("records[" + idx + "].qty must be an integer >= 0");
            }
            JsonNode tags = r.get("tags");
            if (tags == null || !tags.isArray()) {
                throw new BadRequest("records[" + idx + "].tags must be an array of strings");
            }
            for (JsonNode t : tags) {
                if (!t.isTextual()) {
                    throw new BadRequest("records[" + idx + "].tags must be an array of strings");
                }
            }
            double total = price * (double) qty; // one IEEE multiplication; qty <= 2^53 converts exactly
            if (!Double.isFinite(total)) {
                throw new BadRequest("records[" + idx + "].price*qty is not finite");
            }
            if (total >= minTotal) {
                kept.add(new Kept(id, asciiUpper(name.textValue()), total));
            }
        }
        // total descending, then id ascending; List.sort is stable. Primitive comparisons, so that
        // -0.0 and 0.0 tie as in the other runtimes (Double.compare would order them).
        kept.sort((a, b) -> a.total > b.total ? -1 : a.total < b.total ? 1 : Long.compare(a.id, b.id));
        ObjectNode out = Json.NODES.objectNode();
        out.put("count", kept.size());
        ArrayNode recs = out.putArray("records");
        for (Kept k : kept) {
            ObjectNode o = recs.addObject();
            o.put("id", k.id);
            o.put("name_upper", k.nameUpper);
            o.put("total", k.total);
        }
        return out;
    }

    /** Upper-cases ASCII a-z only; every other character (UTF-16 unit) is unchanged. */
    static String asciiUpper(String s) {
        char[] c = s.toCharArray();
        for (int i = 0; i < c.length; i++) {
            if (c[i] >= 'a' && c[i] <= 'z') {
                c[i] = (char) (c[i] - 32);
            }
        }
        return new String(c);
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static JsonNode hash(JsonNode p) {
        String data = strParam(p, "data");
        long rounds = intParam(p, "rounds", 1, 1_000_000);
        MessageDigest md = sha256();
        byte[] h = md.digest(data.getBytes(StandardCharsets.UTF_8));
        try {
            for (long i = 1; i < rounds; i++) {
                md.update(h); // copies h into the digest's buffer, so h can take the result
                md.digest(h, 0, 32);
            }
        } catch (DigestException e) {
            throw new IllegalStateException(e);
        }
        return Json.NODES.textNode(Facts.hex(h));
    }

    static JsonNode matmul(JsonNode p) {
        int n = (int) intParam(p, "n", 1, 512);
        double[] a = new double[n * n];
        double[] bt = new double[n * n]; // B by column: bt[j*n+k] == B[k][j]; values and order unchanged
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                a[i * n + j] = ((i * n + j) % 13) / 13.0;
                bt[j * n + i] = ((i + 2 * j) % 7) / 7.0;
            }
        }
        double trace = 0.0;
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                int ai = i * n;
                int bj = j * n;
                for (int k = 0; k < n; k++) {
                    s = s + a[ai + k] * bt[bj + k]; // Java never fuses: product rounded, then the sum
                }
                if (i == j) {
                    trace = trace + s; // C[i][i] for i ascending
                }
                sum = sum + s; // C row-major: the same order as summing a stored C
            }
        }
        ObjectNode out = Json.NODES.objectNode();
        out.put("n", n);
        out.put("trace", trace);
        out.put("sum", sum);
        return out;
    }

    static JsonNode alloc(JsonNode p) {
        long mb = intParam(p, "mb", 1, 1024);
        long b = intParam(p, "object_bytes", 1, 16L * 1024 * 1024);
        long count = mb * 1024 * 1024 / b;
        if (count > 16L * 1024 * 1024) {
            throw new BadRequest("too many objects (mb*2^20/object_bytes must be <= 2^24)");
        }
        int size = (int) b;
        byte[][] objs = new byte[(int) count][];
        for (int i = 0; i < count; i++) {
            byte[] o = new byte[size];
            byte mark = (byte) (i % 251);
            for (int off = 0; off < size; off += 4096) {
                o[off] = mark;
            }
            objs[i] = o;
        }
        long checksum = 0;
        for (byte[] o : objs) {
            checksum += o[0] & 0xff;
        }
        objs = null; // drop the list
        ObjectNode out = Json.NODES.objectNode();
        out.put("objects", count);
        out.put("bytes", count * b);
        out.put("checksum", checksum);
        return out;
    }

    static JsonNode sleep(JsonNode p) {
        long ms = intParam(p, "ms", 0, 60_000);
        try {
            Thread.sleep(ms); // on this request's own thread: other requests are served meanwhile
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
        ObjectNode out = Json.NODES.objectNode();
        out.put("slept_ms", ms);
        return out;
    }

    private static boolean isHex64(String s) {
        if (s.length() != 64) {
            return false;
        }
        for (int i = 0; i < 64; i++) {
            char c = s.charAt(i);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
                return false;
            }
        }
        return true;
    }

    static JsonNode validate(JsonNode p) {
        String dataB64 = strParam(p, "data_b64");
        long maxBytes = intParam(p, "max_bytes", 0, MAX_SAFE_INT);
        String want = strParam(p, "sha256");
        if (!isHex64(want)) {
            throw new BadRequest("param 'sha256' must be 64 hex digits");
        }
        byte[] data;
        try {
            for (int i = 0; i < dataB64.length(); i++) {
                if (dataB64.charAt(i) > 0x7f) {
                    throw new IllegalArgumentException("non-ASCII");
                }
            }
            data = Base64.getDecoder().decode(dataB64);
        } catch (IllegalArgumentException e) {
            throw new BadRequest("param 'data_b64' is not canonical base64");
        }
        // The JDK decoder accepts missing padding and non-zero trailing bits: canonical means
        // that re-encoding gives the same string.
        if (!Base64.getEncoder().encodeToString(data).equals(dataB64)) {
            throw new BadRequest("param 'data_b64' is not canonical base64");
        }
        ObjectNode out = Json.NODES.objectNode();
        out.put("valid", false);
        out.put("size", data.length);
        if (data.length > maxBytes) {
            out.put("reason", "too_large");
        } else if (!Facts.hex(sha256().digest(data)).equals(want.toLowerCase(Locale.ROOT))) {
            out.put("reason", "checksum_mismatch");
        } else {
            out.put("valid", true);
            out.putNull("reason");
        }
        return out;
    }
}
