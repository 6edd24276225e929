/*
 * Per-environment state of the addon's compressors. Node gives an addon one instance-data
 * pointer per environment (the main thread, each worker thread); this shares it out as
 * slots, each created on first use and freed with the environment.
 */
#ifndef STRATA_INSTANCE_H
#define STRATA_INSTANCE_H
#include <node_api.h>

enum instance_slot { SLOT_DEFLATE, SLOT_LZ4, INSTANCE_SLOTS };

/*
 * The state in `slot` for this environment: made by `create` the first time (NULL when it
 * fails, and tried again next time), released by `destroy` when the environment ends.
 */
void *instance_slot(napi_env env, enum instance_slot slot, void *(*create)(void), void (*destroy)(void *));

#endif
