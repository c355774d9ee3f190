/**
 * Bad params or an unknown workload: HTTP 400, Lambda FunctionError (errorType "BadRequest").
 *
 * <p>This class and the rest of the function live in the unnamed package on purpose: AWS's
 * runtime interface client reports a thrown exception's errorType as {@code Class.getName()},
 * and the contract's errorType is the bare {@code "BadRequest"} for every runtime.
 */
public final class BadRequest extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public BadRequest(String message) {
        super(message, null, false, false); // no stack trace: a bad request is not a bug
    }
}
