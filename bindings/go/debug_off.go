//go:build !m2cdebug

package m2c

// debugBuild reports whether the package was built with the m2cdebug tag.
const debugBuild = false

// Outside the m2cdebug build the debug hooks do nothing.
func debugGC()                   {}
func debugRegister(any)          {}
func debugUnregister(any)        {}
func debugCheckLive(string, any) {}
