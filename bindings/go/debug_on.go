//go:build m2cdebug

package m2c

import (
	"fmt"
	"runtime"
	"sync"
	"time"
)

// debugBuild reports whether the package was built with the m2cdebug tag.
const debugBuild = true

// debugGC runs a full garbage collection before every C call and waits
// until the finalizers it queued have run, so that a Cache kept alive only
// by luck is destroyed by its finalizer at once (and caught by
// debugCheckLive) instead of once in a blue moon.
func debugGC() {
	runtime.GC()
	done := make(chan struct{})
	marker := new([64]byte) // not 16 bytes or less: tiny allocations may never be finalized
	runtime.SetFinalizer(marker, func(*[64]byte) { close(done) })
	marker = nil
	runtime.GC()
	// Finalizers run one at a time, in order: once the marker's has run,
	// every finalizer queued before it has too. The timeout only guards
	// against a finalizer that blocks.
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// liveHandles holds every handle between m2c_create and m2c_destroy.
var liveHandles sync.Map

func debugRegister(h any)   { liveHandles.Store(h, true) }
func debugUnregister(h any) { liveHandles.Delete(h) }

// debugCheckLive panics if h has been destroyed: a C call is about to use a
// freed cache.
func debugCheckLive(op string, h any) {
	if _, ok := liveHandles.Load(h); !ok {
		panic(fmt.Sprintf("m2c (m2cdebug): %s on a destroyed cache handle %p: use after free", op, h))
	}
}
