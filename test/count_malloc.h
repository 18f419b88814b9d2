/* SPDX-License-Identifier: MIT */
/*
 * count_malloc.h - this test binary's malloc family counts its calls in
 * `allocations`, then hands them to glibc's. Include from one file of a
 * test binary, only where TH_SANITIZED is not defined (a sanitizer
 * runtime owns malloc there).
 */
#ifndef SHMQ_COUNT_MALLOC_H
#define SHMQ_COUNT_MALLOC_H

#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static volatile long allocations;

void *malloc(size_t n);
void *malloc(size_t n)
{
    __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m);
void *calloc(size_t n, size_t m)
{
    __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n);
void *realloc(void *p, size_t n)
{
    __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
void *memalign(size_t a, size_t n);
void *memalign(size_t a, size_t n)
{
    __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_memalign(a, n);
}

#endif /* SHMQ_COUNT_MALLOC_H */
