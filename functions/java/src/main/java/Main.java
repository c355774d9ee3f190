import sun.misc.Signal;

/**
 * fnbench benchmark subject — Java (functions/CONTRACT.md). One jar, like the Rust and Go
 * binaries: Lambda mode (AWS's runtime interface client, handler Handler::handleRequest) when
 * AWS_LAMBDA_RUNTIME_API is set, otherwise the HTTP server (Server).
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) throws Throwable {
        // SIGTERM/SIGINT: exit 0 at once (the JVM's default is exit 143 after shutdown hooks).
        // halt() still writes a -XX:ArchiveClassesAtExit archive (the java-cds build's training run).
        for (String sig : new String[] {"TERM", "INT"}) {
            Signal.handle(new Signal(sig), s -> Runtime.getRuntime().halt(0));
        }
        String api = System.getenv("AWS_LAMBDA_RUNTIME_API");
        if (api != null && !api.isEmpty()) {
            com.amazonaws.services.lambda.runtime.api.client.AWSLambda.main(new String[] {"Handler::handleRequest"});
            return;
        }
        try {
            Server.serve();
        } catch (Throwable t) { // the server's own threads would keep a half-started JVM alive
            t.printStackTrace();
            Runtime.getRuntime().halt(1);
        }
    }
}
