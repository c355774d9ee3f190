package main

// The seven workloads of functions/CONTRACT.md. Every workload returns the
// contract's `result` or a *BadRequest; nothing here panics on user input.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const maxSafeInt = 1 << 53

// BadRequest: bad params or unknown workload (HTTP 400; Lambda errorType "BadRequest").
type BadRequest struct{ Msg string }

func (e *BadRequest) Error() string { return e.Msg }

func bad(format string, a ...any) *BadRequest { return &BadRequest{Msg: fmt.Sprintf(format, a...)} }

type params = map[string]any

// asInt: CONTRACT "integer" — a JSON number with integral value, |v| <= 2^53.
func asInt(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		if i > maxSafeInt || i < -maxSafeInt {
			return 0, false
		}
		return i, true
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f != math.Trunc(f) || math.Abs(f) > maxSafeInt {
		return 0, false
	}
	return int64(f), true
}

func asNum(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

func get(p params, key string) (any, error) {
	v, ok := p[key]
	if !ok {
		return nil, bad("missing param %q", key)
	}
	return v, nil
}

func intParam(p params, key string, lo, hi int64) (int64, error) {
	v, err := get(p, key)
	if err != nil {
		return 0, err
	}
	i, ok := asInt(v)
	if !ok {
		return 0, bad("param %q must be an integer", key)
	}
	if i < lo || i > hi {
		return 0, bad("param %q must be in [%d, %d]", key, lo, hi)
	}
	return i, nil
}

func strParam(p params, key string) (string, error) {
	v, err := get(p, key)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", bad("param %q must be a string", key)
	}
	return s, nil
}

// runWorkload dispatches one invocation. sleep blocks only this goroutine.
func runWorkload(workload string, raw any) (any, error) {
	p, ok := raw.(map[string]any)
	if !ok {
		if _, known := workloads[workload]; !known {
			return nil, bad("unknown workload: %q", workload)
		}
		return nil, bad("params must be a JSON object")
	}
	fn, known := workloads[workload]
	if !known {
		return nil, bad("unknown workload: %q", workload)
	}
	return fn(p)
}

var workloads = map[string]func(params) (any, error){
	"echo":      echo,
	"transform": transform,
	"hash":      hashWorkload,
	"matmul":    matmul,
	"alloc":     alloc,
	"sleep":     sleepWorkload,
	"validate":  validate,
}

func echo(p params) (any, error) { return get(p, "payload") }

type outRecord struct {
	ID        int64   `json:"id"`
	NameUpper string  `json:"name_upper"`
	Total     float64 `json:"total"`
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}

func transform(p params) (any, error) {
	rv, err := get(p, "records")
	if err != nil {
		return nil, err
	}
	records, ok := rv.([]any)
	if !ok {
		return nil, bad("param \"records\" must be an array")
	}
	mv, err := get(p, "min_total")
	if err != nil {
		return nil, err
	}
	minTotal, ok := asNum(mv)
	if !ok {
		return nil, bad("param \"min_total\" must be a number")
	}
	out := make([]outRecord, 0, len(records))
	for idx, item := range records {
		r, ok := item.(map[string]any)
		if !ok {
			return nil, bad("records[%d] must be an object", idx)
		}
		id, ok := asInt(r["id"])
		if !ok {
			return nil, bad("records[%d].id must be an integer", idx)
		}
		name, ok := r["name"].(string)
		if !ok {
			return nil, bad("records[%d].name must be a string", idx)
		}
		price, ok := asNum(r["price"])
		if !ok || price < 0 {
			return nil, bad("records[%d].price must be a number >= 0", idx)
		}
		qty, ok := asInt(r["qty"])
		if !ok || qty < 0 {
			return nil, bad("records[%d].qty must be an integer >= 0", idx)
		}
		tags, ok := r["tags"].([]any)
		if ok {
			for _, t := range tags {
				if _, isStr := t.(string); !isStr {
					ok = false
					break
				}
			}
		}
		if !ok {
			return nil, bad("records[%d].tags must be an array of strings", idx)
		}
		total := float64(price * float64(qty))
		if math.IsInf(total, 0) {
			return nil, bad("records[%d].price*qty is not finite", idx)
		}
		if total >= minTotal {
			out = append(out, outRecord{ID: id, NameUpper: asciiUpper(name), Total: total})
		}
	}
	// total desc, then id asc; stable (ties keep input order).
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].ID < out[j].ID
	})
	return map[string]any{"count": len(out), "records": out}, nil
}

func hashWorkload(p params) (any, error) {
	data, err := strParam(p, "data")
	if err != nil {
		return nil, err
	}
	rounds, err := intParam(p, "rounds", 1, 1_000_000)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(data))
	for i := int64(1); i < rounds; i++ {
		h = sha256.Sum256(h[:])
	}
	return hex.EncodeToString(h[:]), nil
}

func matmul(p params) (any, error) {
	n64, err := intParam(p, "n", 1, 512)
	if err != nil {
		return nil, err
	}
	n := int(n64)
	a := make([]float64, n*n)
	b := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			a[i*n+j] = float64((i*n+j)%13) / 13.0
			b[i*n+j] = float64((i+2*j)%7) / 7.0
		}
	}
	c := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			s := 0.0
			for k := 0; k < n; k++ {
				// The explicit float64() conversion rounds the product, which the
				// Go spec guarantees prevents fusing into an FMA (arm64, ppc64, s390x).
				s += float64(a[i*n+k] * b[k*n+j])
			}
			c[i*n+j] = s
		}
	}
	trace := 0.0
	for i := 0; i < n; i++ {
		trace += c[i*n+i]
	}
	sum := 0.0
	for _, v := range c {
		sum += v
	}
	return map[string]any{"n": n, "trace": trace, "sum": sum}, nil
}

func alloc(p params) (any, error) {
	mb, err := intParam(p, "mb", 1, 1024)
	if err != nil {
		return nil, err
	}
	b, err := intParam(p, "object_bytes", 1, 16*1024*1024)
	if err != nil {
		return nil, err
	}
	count := mb * 1024 * 1024 / b
	if count > 16*1024*1024 {
		return nil, bad("too many objects (mb*2^20/object_bytes must be <= 2^24)")
	}
	objs := make([][]byte, count)
	for i := int64(0); i < count; i++ {
		o := make([]byte, b)
		mark := byte(i % 251)
		for off := int64(0); off < b; off += 4096 {
			o[off] = mark
		}
		objs[i] = o
	}
	var checksum int64
	for _, o := range objs {
		checksum += int64(o[0])
	}
	objs = nil
	_ = objs
	return map[string]any{"objects": count, "bytes": count * b, "checksum": checksum}, nil
}

func sleepWorkload(p params) (any, error) {
	ms, err := intParam(p, "ms", 0, 60_000)
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Duration(ms) * time.Millisecond) // parks this goroutine only
	return map[string]any{"slept_ms": ms}, nil
}

var hex64 = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func validate(p params) (any, error) {
	dataB64, err := strParam(p, "data_b64")
	if err != nil {
		return nil, err
	}
	maxBytes, err := intParam(p, "max_bytes", 0, maxSafeInt)
	if err != nil {
		return nil, err
	}
	want, err := strParam(p, "sha256")
	if err != nil {
		return nil, err
	}
	if !hex64.MatchString(want) {
		return nil, bad("param \"sha256\" must be 64 hex digits")
	}
	// Strict rejects non-zero trailing bits; the re-encode check also rejects
	// the \r and \n that encoding/base64 silently skips.
	data, err := base64.StdEncoding.Strict().DecodeString(dataB64)
	if err != nil || base64.StdEncoding.EncodeToString(data) != dataB64 {
		return nil, bad("param \"data_b64\" is not canonical base64")
	}
	size := len(data)
	if int64(size) > maxBytes {
		return map[string]any{"valid": false, "size": size, "reason": "too_large"}, nil
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != strings.ToLower(want) {
		return map[string]any{"valid": false, "size": size, "reason": "checksum_mismatch"}, nil
	}
	return map[string]any{"valid": true, "size": size, "reason": nil}, nil
}
