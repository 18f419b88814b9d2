/* SPDX-License-Identifier: MIT */
/* shm.h - the region: names, geometry, creation, validation, mapping. */
#ifndef SHMQ_SHM_H
#define SHMQ_SHM_H

#include <sys/types.h>

#include "internal.h"

struct shmq_config;

/* -EINVAL unless name is '/' then 1..200 chars without '/', not . or .. */
int shmq__shm_check_name(const char *name);

/* Sizes for cfg (NULL: defaults); -EINVAL when they are out of bounds. */
int shmq__shm_geometry(const struct shmq_config *cfg,
                       struct shmq_geometry *geo);

/* Room for the private name of a named region being built. */
#define SHM_TMP_MAX 96

/* A new sized region whose pages are all allocated (-ENOSPC / -ENOMEM
 * now rather than SIGBUS later): a memfd sealed against shrink and grow
 * (tmp NULL), or a file under a fresh private name written to tmp (cap
 * bytes), for shmq__shm_publish() once it is initialised. -EINVAL when
 * mode lets a class of users read without writing (shmq_create_named).
 * The fd or a negative errno. */
int shmq__shm_create_fd(const struct shmq_geometry *geo, char *tmp, size_t cap,
                        mode_t mode);

/* Give the region built under tmp its name: -EEXIST if it is taken.
 * tmp is removed either way. */
int shmq__shm_publish(const char *tmp, const char *name);

/* Write the identity and initial state into q's freshly mapped region. */
void shmq__shm_init_region(struct shmq *q);

/* Make fd's region safe to map, then read and validate its identity into
 * geo. A memfd not sealed against shrinking is sealed (-EPERM when it
 * cannot be); every page is allocated (-ENOSPC, -ENOMEM). -EPROTO when
 * it is not a region of this layout, -EBADF, ... */
int shmq__shm_read_identity(int fd, struct shmq_geometry *geo);

/* Map fd's region (with the mirror of its ring) into q. */
int shmq__shm_map(struct shmq *q);
void shmq__shm_unmap(struct shmq *q);

#endif /* SHMQ_SHM_H */
