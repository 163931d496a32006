// Minimal, hand-written Proxy-Wasm ABI v0.2.x bindings for the standard Go
// toolchain (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared, Go >= 1.24).
//
// Written from the Proxy-Wasm spec (abi-versions/v0.2.1) only; no SDK code is
// used. Only the host functions this plugin needs are imported. Every pointer
// crossing the boundary is a 32-bit offset into the module's linear memory:
// Go passes unsafe.Pointer / *uint32 parameters of //go:wasmimport functions
// as i32, and //go:wasmexport results are plain int32 values.

package main

import (
	"unsafe"
)

// Enum values from spec v0.2.1 §Types.
const (
	statusOK       = 0
	statusNotFound = 1

	logTrace    = 0
	logDebug    = 1
	logInfo     = 2
	logWarn     = 3
	logError    = 4
	logCritical = 5

	bufferPluginConfiguration = 7

	mapHTTPRequestHeaders  = 0
	mapHTTPResponseHeaders = 2

	metricCounter = 0

	actionContinue = 0
)

// ---------------------------------------------------------------------------
// Host functions (module "env"). All return a proxy_status_t (i32).
// ---------------------------------------------------------------------------

//go:wasmimport env proxy_log
func proxyLog(level int32, msgPtr unsafe.Pointer, msgLen int32) int32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(bufferType, start, maxSize int32, retPtr, retSize *uint32) int32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType int32, keyPtr unsafe.Pointer, keyLen int32, retPtr, retSize *uint32) int32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType int32, keyPtr unsafe.Pointer, keyLen int32, valuePtr unsafe.Pointer, valueLen int32) int32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(metricType int32, namePtr unsafe.Pointer, nameLen int32, retID *uint32) int32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(metricID int32, delta int64) int32

// ---------------------------------------------------------------------------
// Guest memory handed to the host.
// ---------------------------------------------------------------------------

// hostAllocated keeps every buffer returned by proxy_on_memory_allocate
// reachable, keyed by its address in linear memory.
//
// Why a map: the host calls proxy_on_memory_allocate in the middle of a host
// call (e.g. proxy_get_buffer_bytes), copies data to the returned address and
// only later reports that address back through an out-parameter. In between,
// no Go variable refers to the buffer, so without this map the garbage
// collector would be free to reclaim it (and reuse the memory) while the host
// is still writing to it. Go's collector never moves heap objects, so the
// address stays valid for as long as the map holds the slice. When a host call
// reports the address back, takeHostBuffer looks the slice up by that address,
// and deletes the entry: the plugin now owns the memory through an ordinary
// slice and the GC frees it once the plugin drops it (spec: "the module owns
// and frees" memory the host allocated through it).
//
// Trade-off: an allocation the host never reports back (a host bug, or a host
// call that fails after allocating) stays in the map forever. That leak is
// bounded by host misbehaviour and is preferable to a use-after-free.
var hostAllocated = map[uint32][]byte{}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size int32) int32 {
	if size < 0 {
		return 0
	}
	// Never hand out a zero-length buffer: &buf[0] needs an element, and a
	// distinct non-zero address per allocation keeps the map keys unique.
	n := int(size)
	if n == 0 {
		n = 1
	}
	buf := make([]byte, n)
	ptr := uint32(uintptr(unsafe.Pointer(&buf[0])))
	hostAllocated[ptr] = buf[:size]
	return int32(ptr)
}

// takeHostBuffer returns the size bytes the host wrote at ptr (memory the host
// obtained from proxy_on_memory_allocate) and releases the keep-alive entry.
// The host reports empty values as ptr=0, size=0 without allocating.
func takeHostBuffer(ptr, size uint32) ([]byte, bool) {
	buf, ok := hostAllocated[ptr]
	if ok {
		delete(hostAllocated, ptr)
	}
	if size == 0 {
		return nil, true
	}
	if !ok || int(size) > len(buf) {
		// Not memory we handed out, or larger than what was allocated.
		return nil, false
	}
	return buf[:size], true
}

// ---------------------------------------------------------------------------
// Go-friendly wrappers.
// ---------------------------------------------------------------------------

// strPtr returns the address of s's bytes (nil for "", sent as 0 with len 0).
func strPtr(s string) unsafe.Pointer {
	return unsafe.Pointer(unsafe.StringData(s))
}

func logf(level int32, msg string) {
	proxyLog(level, strPtr(msg), int32(len(msg)))
}

// The out-parameter variables below are locals whose address is passed to a
// body-less (imported) function, so escape analysis moves them to the heap:
// their address cannot change even if the nested proxy_on_memory_allocate call
// grows (and so moves) the goroutine stack before the host writes to them.

// statusBadHostMemory is returned by the wrappers below (never by the host) when
// the host reports memory that proxy_on_memory_allocate did not hand out.
const statusBadHostMemory = -1

func getBufferBytes(bufferType, start, maxSize int32) ([]byte, int32) {
	var ptr, size uint32
	st := proxyGetBufferBytes(bufferType, start, maxSize, &ptr, &size)
	if st != statusOK {
		return nil, st
	}
	b, ok := takeHostBuffer(ptr, size)
	if !ok {
		return nil, statusBadHostMemory
	}
	return b, statusOK
}

func getHeaderMapValue(mapType int32, key string) (string, int32) {
	var ptr, size uint32
	st := proxyGetHeaderMapValue(mapType, strPtr(key), int32(len(key)), &ptr, &size)
	if st != statusOK {
		return "", st
	}
	b, ok := takeHostBuffer(ptr, size)
	if !ok {
		return "", statusBadHostMemory
	}
	return string(b), statusOK
}

func addHeaderMapValue(mapType int32, key, value string) int32 {
	return proxyAddHeaderMapValue(mapType, strPtr(key), int32(len(key)), strPtr(value), int32(len(value)))
}

func defineMetric(metricType int32, name string) (uint32, int32) {
	var id uint32
	st := proxyDefineMetric(metricType, strPtr(name), int32(len(name)), &id)
	return id, st
}

func incrementMetric(id uint32, delta int64) int32 {
	return proxyIncrementMetric(int32(id), delta)
}
