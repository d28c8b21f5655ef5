/* shm_int.h — helpers shared by the files of shm/ and nothing else. */
#ifndef AUTHCACHE_SHM_INT_H
#define AUTHCACHE_SHM_INT_H

#include "shm.h"

/* Derive the handle's HMAC state from the segment key (shm_key.c). */
void shm__key_init(struct shm *h, const uint8_t key[SHM_KEY_LEN]);

#endif
