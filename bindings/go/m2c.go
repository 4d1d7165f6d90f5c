// Package m2c is the Go binding of m2c, the Mamba2 recurrent-state cache.
//
// A [Cache] owns, per Mamba2 layer and per sequence slot, the depthwise-conv
// window and the SSM state, plus a position per slot. It wraps the C ABI of
// libm2c (include/m2c.h); every exported C function has a Go counterpart.
//
// # Errors
//
// Every fallible call returns an error that is nil on success or an [*Error]
// carrying the C status code, the C function that failed and the library's
// detail message. Compare with the sentinel values (ErrShapeMismatch,
// ErrCorrupt, ...) through errors.Is. A status code this binding does not
// know is an error too, never success. A failing call changes nothing in
// the cache.
//
// # Lengths and slots
//
// Batched calls take a slot list (a []int32) and a buffer. A nil slot list
// means the dense rows 0..n-1, where n is derived from the buffer length
// (for [Cache.Reset] and [Cache.Advance]: every slot); otherwise row i
// addresses slots[i] and a negative entry is a padding row. Lengths are
// checked in Go before the call, and the library checks them again.
//
// # Kernels
//
// [Cache.ConvStep], [Cache.SSMStep], [Cache.ConvPrefill] and
// [Cache.SSMPrefill] run Mamba2's causal conv and selective-state update in
// place on the cache, with parameters in [ConvParams] and [SSMParams] (start
// from [DefaultConvParams] and [DefaultSSMParams]) and per-token buffers as
// [Data] of one dtype. The C argument structs hold the addresses of Go
// slices, which the binding pins for the duration of each call.
//
// # Threads
//
// A Cache may be used from many goroutines at once: the library serialises
// mutations and shares reads. [Cache.Close] waits for calls in progress and
// may be called any number of times; calls after Close fail with [ErrClosed].
// Zero-copy views ([Cache.ConvView], [Cache.SSMView]) are not synchronised.
//
// # Linking
//
// By default the package finds an installed m2c through pkg-config (the
// m2c.pc that scripts/install.sh writes; point PKG_CONFIG_PATH at
// <prefix>/lib/pkgconfig), like any cgo package of a C library, and records
// no run-time search path: the program finds libm2c.so.1 the way the system
// finds any library (LD_LIBRARY_PATH, ldconfig, or an rpath the builder adds
// with CGO_LDFLAGS=-Wl,-rpath,<prefix>/lib). Built with -tags m2c_intree,
// it links the development build of the repository it sits in instead
// (include/ and target/release/), which is how scripts/test-go.sh tests it.
package m2c

/*
#include "m2c.h"
*/
import "C"

import (
	"fmt"
	"runtime"
)

// HeaderVersion is the library version of the header this package was built
// with (M2C_VERSION_STRING).
const HeaderVersion = C.M2C_VERSION_STRING

// HeaderABIVersion is the ABI version of the header this package was built
// with (M2C_ABI_VERSION). The loaded library must report the same value.
const HeaderABIVersion uint32 = C.M2C_ABI_VERSION

// abiErr is non-nil when the loaded library's ABI differs from the header's;
// every entry point that needs the library then refuses to run.
var abiErr = checkABI(ABIVersion(), HeaderABIVersion)

// checkABI compares the library's ABI version with the header's.
func checkABI(lib, header uint32) error {
	if lib == header {
		return nil
	}
	return &Error{
		Code: StatusIncompatible,
		Op:   "m2c_abi_version",
		Msg: fmt.Sprintf("the loaded libm2c has ABI version %d, but this Go package was built "+
			"against include/m2c.h with ABI version %d: rebuild one of them", lib, header),
	}
}

// CheckABI reports whether the loaded library has the ABI version this
// package was built for. [New] and [ConfigBytes] return the same error.
func CheckABI() error { return abiErr }

// Version returns the version of the loaded library, "MAJOR.MINOR.PATCH"
// (m2c_version).
func Version() string { return C.GoString(C.m2c_version()) }

// ABIVersion returns the ABI version of the loaded library (m2c_abi_version).
func ABIVersion() uint32 { return uint32(C.m2c_abi_version()) }

// callC runs one C call with the goroutine locked to its OS thread, so that
// the failure detail (m2c_last_error, thread-local in the library) is read on
// the thread that made the failing call.
func callC(op string, call func() C.m2c_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return statusError(op, Status(call()))
}

// lastError returns m2c_last_error() of the calling OS thread. The caller
// must hold the goroutine on its thread since the failing call.
func lastError() string { return C.GoString(C.m2c_last_error()) }
