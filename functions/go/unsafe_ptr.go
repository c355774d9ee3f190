package main

import "unsafe"

// uintptrOf passes a Timespec to the raw clock_gettime syscall.
func uintptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }
