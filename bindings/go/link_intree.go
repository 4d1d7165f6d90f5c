//go:build m2c_intree

package m2c

// -tags m2c_intree: the development build of the repository this package
// sits in (include/m2c.h and target/release/libm2c.so, from
// `cargo build --release`). No rpath is recorded: run with
// LD_LIBRARY_PATH=<repository>/target/release, where the build leaves the
// libm2c.so.1 link that the program asks for.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lm2c
*/
import "C"
