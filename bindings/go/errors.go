package m2c

// #include "m2c.h"
import "C"

import (
	"errors"
	"fmt"
	"strings"
)

// Status is an m2c status code (m2c_status). StatusOK is success; every other
// value, including one this package does not know, is a failure.
type Status int32

// The status codes of include/m2c.h. Their values are part of the ABI.
const (
	StatusOK               Status = C.M2C_STATUS_OK                // success
	StatusNullArg          Status = C.M2C_STATUS_NULL_ARG          // a required pointer was NULL
	StatusInvalidArg       Status = C.M2C_STATUS_INVALID_ARG       // duplicate slot, misaligned or aliasing buffer, ...
	StatusInvalidConfig    Status = C.M2C_STATUS_INVALID_CONFIG    // the configuration breaks an invariant
	StatusOutOfRange       Status = C.M2C_STATUS_OUT_OF_RANGE      // a layer, slot or counter out of range
	StatusShapeMismatch    Status = C.M2C_STATUS_SHAPE_MISMATCH    // a buffer length differs from the shape
	StatusUnsupportedDtype Status = C.M2C_STATUS_UNSUPPORTED_DTYPE // a dtype value names no dtype
	StatusOutOfMemory      Status = C.M2C_STATUS_OUT_OF_MEMORY     // memory could not be allocated
	StatusPoisoned         Status = C.M2C_STATUS_POISONED          // the handle panicked in an earlier mutation
	StatusPanic            Status = C.M2C_STATUS_PANIC             // a bug inside m2c was caught at the boundary
	StatusUnsupported      Status = C.M2C_STATUS_UNSUPPORTED       // not available in this build or machine
	StatusNoFreeSlot       Status = C.M2C_STATUS_NO_FREE_SLOT      // every slot is acquired
	StatusCorrupt          Status = C.M2C_STATUS_CORRUPT           // a damaged snapshot or file
	StatusIncompatible     Status = C.M2C_STATUS_INCOMPATIBLE      // a snapshot or file for another shape or version
	StatusIO               Status = C.M2C_STATUS_IO                // the operating system refused an I/O operation
	StatusNotFound         Status = C.M2C_STATUS_NOT_FOUND         // a store key with no entry
)

// String returns the library's static description of the code
// (m2c_status_str); "unknown status code" for a value it does not define.
func (s Status) String() string { return C.GoString(C.m2c_status_str(C.m2c_status(s))) }

// Error is a failed m2c call.
type Error struct {
	// Code is the status the call returned (never StatusOK).
	Code Status
	// Op is the C function that failed, e.g. "m2c_update_conv".
	Op string
	// Msg is the library's detail (m2c_last_error, read on the failing
	// thread) or, for checks made in Go, a message in the same style.
	Msg string

	wrapped error // ErrClosed for calls on a closed cache
}

// Error formats the error as "m2c: <status text>: <detail>".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("m2c: ")
	if e.Op != "" && !strings.HasPrefix(e.Msg, e.Op+":") {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	b.WriteString(e.Code.String())
	if e.Code.String() == "unknown status code" {
		fmt.Fprintf(&b, " %d", int32(e.Code))
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

// Is reports whether target is the sentinel of e's status code, so that
// errors.Is(err, ErrCorrupt) holds for every error with StatusCorrupt.
// A sentinel is an *Error with no Op and no Msg.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Msg == "" && t.wrapped == nil && t.Code == e.Code
}

// Unwrap returns ErrClosed for a call on a closed cache, nil otherwise.
func (e *Error) Unwrap() error { return e.wrapped }

// The sentinel of each failure status, for errors.Is.
var (
	ErrNullArg          = &Error{Code: StatusNullArg}
	ErrInvalidArg       = &Error{Code: StatusInvalidArg}
	ErrInvalidConfig    = &Error{Code: StatusInvalidConfig}
	ErrOutOfRange       = &Error{Code: StatusOutOfRange}
	ErrShapeMismatch    = &Error{Code: StatusShapeMismatch}
	ErrUnsupportedDtype = &Error{Code: StatusUnsupportedDtype}
	ErrOutOfMemory      = &Error{Code: StatusOutOfMemory}
	ErrPoisoned         = &Error{Code: StatusPoisoned}
	ErrPanic            = &Error{Code: StatusPanic}
	ErrUnsupported      = &Error{Code: StatusUnsupported}
	ErrNoFreeSlot       = &Error{Code: StatusNoFreeSlot}
	ErrCorrupt          = &Error{Code: StatusCorrupt}
	ErrIncompatible     = &Error{Code: StatusIncompatible}
	ErrIO               = &Error{Code: StatusIO}
	ErrNotFound         = &Error{Code: StatusNotFound}
)

// ErrClosed is matched (errors.Is) by the error of any call on a closed
// [Cache]. That error is also an ErrNullArg: the C library would see a NULL
// handle.
var ErrClosed = errors.New("m2c: the cache is closed")

// statusError turns a status returned on this OS thread into an error: nil
// for StatusOK, an *Error with the thread's m2c_last_error otherwise. An
// unknown code is a failure like any other.
func statusError(op string, s Status) error {
	if s == StatusOK {
		return nil
	}
	return &Error{Code: s, Op: op, Msg: lastError()}
}

// goError is a failure found in Go before calling op, in the library's style.
func goError(s Status, op, format string, args ...any) error {
	return &Error{Code: s, Op: op, Msg: op + ": " + fmt.Sprintf(format, args...)}
}

// closedError is the error of a call on a closed cache.
func closedError(op string) error {
	return &Error{Code: StatusNullArg, Op: op, Msg: op + ": the cache is closed", wrapped: ErrClosed}
}
