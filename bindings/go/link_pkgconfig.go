//go:build !m2c_intree

package m2c

// The default: an installed m2c, found through pkg-config (m2c.pc). No
// rpath is recorded; see the package documentation.

/*
#cgo pkg-config: m2c
*/
import "C"
