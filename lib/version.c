/* SPDX-License-Identifier: MIT */
/*
 * version.c - the version of the library a program runs with, which may
 * be newer than the shmq.h it was compiled against (SHMQ_VERSION_*).
 */
#include "internal.h"
#include "shmq.h"

#define STR_(x) #x
#define STR(x)  STR_(x)

SHMQ_PUBLIC unsigned shmq_version(void)
{
    return SHMQ_VERSION_NUMBER;
}

SHMQ_PUBLIC const char *shmq_version_string(void)
{
    return STR(SHMQ_VERSION_MAJOR) "." STR(SHMQ_VERSION_MINOR) "." STR(
        SHMQ_VERSION_PATCH);
}
