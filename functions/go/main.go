// fnbench benchmark subject — Go runtime. Implements functions/CONTRACT.md.
//
// One binary: Lambda mode (aws-lambda-go) when AWS_LAMBDA_RUNTIME_API is set,
// otherwise a net/http server on $HOST:$PORT (default 127.0.0.1:8080; PORT=0: any free
// port, reported on $FNBENCH_READY_FD).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

const (
	runtimeName  = "go"
	maxBodyBytes = 8 << 20
)

// startTime: main-package variable initialisation is the earliest point Go
// user code can observe; procAgeLowerBound covers the runtime bootstrap before it.
var startTime = time.Now()

var (
	instance = newInstanceID()
	cold     atomic.Bool
	initMs   float64
)

func newInstanceID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprintf("%016x", uint64(time.Now().UnixNano())^uint64(os.Getpid())<<32)
	}
	return hex.EncodeToString(b)
}

// procAgeLowerBound: ms since the process was created, from /proc/self/stat
// starttime (clock ticks since boot, USER_HZ = 100 on Linux) rounded up, and
// CLOCK_BOOTTIME. 0 where unavailable.
func procAgeLowerBound() float64 {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 20 {
		return 0
	}
	var ticks int64
	if _, err := fmt.Sscan(fields[19], &ticks); err != nil {
		return 0
	}
	var ts syscall.Timespec
	const clockBoottime = 7
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptrOf(&ts), 0); e != 0 {
		return 0
	}
	now := float64(ts.Sec) + float64(ts.Nsec)/1e9
	age := (now - float64(ticks+1)/100.0) * 1000.0
	if age < 0 {
		return 0
	}
	return age
}

func markReady() {
	inProcess := float64(time.Since(startTime).Nanoseconds()) / 1e6
	initMs = max(inProcess, procAgeLowerBound())
}

// decodeJSON: one strict JSON value; numbers kept as json.Number so integers
// and echo payloads are not forced through float64. Empty body means {}.
func decodeJSON(body []byte) (any, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, bad("body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("body is not valid JSON: trailing data")
	}
	return v, nil
}

func envelope(workload string, isCold bool, t0 time.Time, result any) map[string]any {
	return map[string]any{
		"runtime":    runtimeName,
		"workload":   workload,
		"cold":       isCold,
		"instance":   instance,
		"init_ms":    initMs,
		"handler_ms": float64(time.Since(t0).Nanoseconds()) / 1e6,
		"result":     result,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"could not encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg, "runtime": runtimeName, "instance": instance})
}

func handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "runtime": runtimeName, "instance": instance})
		} else {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		}
		return
	}
	if r.Method != http.MethodPost {
		if r.Method == http.MethodGet {
			writeError(w, http.StatusNotFound, "not found")
		} else {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		}
		return
	}
	workload := strings.TrimPrefix(r.URL.Path, "/")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		} else {
			writeError(w, http.StatusBadRequest, "could not read request body")
		}
		return
	}
	t0 := time.Now()
	isCold := cold.Swap(false)
	params, err := decodeJSON(body)
	var result any
	if err == nil {
		result, err = runWorkload(workload, params)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, envelope(workload, isCold, t0, result))
}

// reportPort: CONTRACT.md §1: with $FNBENCH_READY_FD set, once listening, write the port and a
// newline to that descriptor and close it (the parent learns the port of PORT=0 and that we listen).
func reportPort(port int) {
	fd, err := strconv.Atoi(os.Getenv("FNBENCH_READY_FD"))
	if err != nil || fd <= 2 {
		return
	}
	ready := os.NewFile(uintptr(fd), "fnbench-ready")
	_, _ = fmt.Fprintf(ready, "%d\n", port)
	_ = ready.Close()
}

func serveHTTP() error {
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(handle), ReadHeaderTimeout: 10 * time.Second}

	// SIGTERM/SIGINT: stop accepting, give in-flight requests at most 1 s, exit.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		os.Exit(0)
	}()

	markReady()
	reportPort(ln.Addr().(*net.TCPAddr).Port)
	return srv.Serve(ln)
}

// lambdaHandler: event {"workload": str, "params": object}. Errors are
// *BadRequest, reported by Lambda as a FunctionError (errorType "BadRequest").
func lambdaHandler(_ context.Context, event json.RawMessage) (map[string]any, error) {
	t0 := time.Now()
	isCold := cold.Swap(false)
	v, err := decodeJSON(event)
	if err != nil {
		return nil, err
	}
	ev, ok := v.(map[string]any)
	if !ok {
		return nil, bad(`event must be a JSON object {"workload", "params"}`)
	}
	workload, ok := ev["workload"].(string)
	if !ok {
		return nil, bad("event.workload must be a string")
	}
	params, present := ev["params"]
	if !present || params == nil {
		params = map[string]any{}
	}
	result, err := runWorkload(workload, params)
	if err != nil {
		return nil, err
	}
	return envelope(workload, isCold, t0, result), nil
}

func main() {
	cold.Store(true)
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		markReady()
		lambda.Start(lambdaHandler)
		return
	}
	if err := serveHTTP(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "fatal:", err)
		os.Exit(1)
	}
}
