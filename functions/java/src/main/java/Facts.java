import java.io.FileInputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;

/** Process facts of functions/CONTRACT.md §2: runtime name, instance id, cold flag, init_ms. */
final class Facts {
    private static final char[] HEX = "0123456789abcdef".toCharArray(); // first: INSTANCE uses it
    /** "java", or "java-cds" for the tuned variant (set by its launch command, -Dfnbench.runtime). */
    static final String RUNTIME = System.getProperty("fnbench.runtime", "java");
    static final String INSTANCE = newInstance();
    private static final AtomicBoolean COLD = new AtomicBoolean(true);
    private static final CompletableFuture<Double> INIT_MS = new CompletableFuture<>();

    private Facts() {}

    /** True exactly once per process: on the first invocation (even one that fails). */
    static boolean takeCold() {
        return COLD.getAndSet(false);
    }

    /**
     * Marks this moment as "ready" (HTTP: listening; Lambda: about to poll) and measures init_ms
     * on a helper thread, so that loading java.management (≈20 ms on a cold JVM) does not delay
     * readiness. The value is the JVM's uptime at the ready moment.
     */
    static void ready() {
        final long readyNanos = System.nanoTime();
        Thread t = new Thread(() -> INIT_MS.complete(initMsAt(readyNanos)), "fnbench-init-ms");
        t.setDaemon(true);
        t.start();
    }

    /** init_ms (waits for ready()'s measurement, normally long finished). */
    static double initMs() {
        return INIT_MS.join();
    }

    /**
     * JVM start -> readyNanos, in ms: the larger of two lower bounds (CONTRACT.md §2.1).
     *
     * <p>RuntimeMXBean.getUptime() counts from the JVM's own start (its elapsed counter starts at
     * the top of JVM creation, before bootstrap class loading). getStartTime() is not used: it is
     * stamped when JVM initialisation completes, ≈50 ms later on a cold start. The /proc bound
     * (starttime rounded up to the next tick, against /proc/uptime, i.e. CLOCK_BOOTTIME) also
     * covers the launcher's work before the JVM is created; it has 10 ms resolution.
     */
    static double initMsAt(long readyNanos) {
        double mx = 0.0;
        try {
            long uptime = ManagementFactory.getRuntimeMXBean().getUptime();
            mx = uptime - (System.nanoTime() - readyNanos) / 1e6;
        } catch (RuntimeException | LinkageError e) {
            // java.management missing (a jlinked image): fall back to /proc alone
        }
        double proc = procAgeLowerBoundMs() - (System.nanoTime() - readyNanos) / 1e6;
        double best = Math.max(mx, proc);
        return Math.max(best, 0.001); // > 0 by contract
    }

    /** ms since this process was created, a lower bound from /proc; 0 where unavailable. */
    static double procAgeLowerBoundMs() {
        try {
            String stat = Files.readString(Path.of("/proc/self/stat"), StandardCharsets.US_ASCII);
            String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            long startTicks = Long.parseLong(fields[19]); // field 22 of proc(5); fields[0] is field 3
            String uptime = Files.readString(Path.of("/proc/uptime"), StandardCharsets.US_ASCII);
            double nowS = Double.parseDouble(uptime.substring(0, uptime.indexOf(' '))); // truncated: a lower bound
            double hz = 100.0; // USER_HZ, fixed at 100 on Linux
            return Math.max(0.0, (nowS - (startTicks + 1) / hz) * 1000.0);
        } catch (IOException | RuntimeException e) {
            return 0.0;
        }
    }

    private static String newInstance() {
        byte[] b = new byte[8];
        try (FileInputStream in = new FileInputStream("/dev/urandom")) {
            if (in.readNBytes(b, 0, 8) != 8) {
                throw new IOException("short read");
            }
        } catch (IOException e) {
            ThreadLocalRandom.current().nextBytes(b);
        }
        return hex(b);
    }

    /** {"status":"ok","runtime","instance"}, built by hand: /health must not load Jackson. */
    static byte[] healthBody() {
        return HEALTH.clone();
    }

    private static final byte[] HEALTH = ("{\"status\":\"ok\",\"runtime\":\"" + RUNTIME
            + "\",\"instance\":\"" + INSTANCE + "\"}").getBytes(StandardCharsets.UTF_8);


    static String hex(byte[] b) {
        char[] out = new char[b.length * 2];
        for (int i = 0; i < b.length; i++) {
            out[2 * i] = HEX[(b[i] >> 4) & 0xf];
            out[2 * i + 1] = HEX[b[i] & 0xf];
        }
        return new String(out);
    }
}
