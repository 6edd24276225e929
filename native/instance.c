/* Slots of per-environment state (native/instance.h). */
#include <stdlib.h>

#include "instance.h"

typedef struct {
  void *data[INSTANCE_SLOTS];
  void (*destroy[INSTANCE_SLOTS])(void *);
} instance;

static void instance_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  instance *in = data;
  for (int i = 0; i < INSTANCE_SLOTS; i++)
    if (in->data[i] != NULL) in->destroy[i](in->data[i]);
  free(in);
}

void *instance_slot(napi_env env, enum instance_slot slot, void *(*create)(void), void (*destroy)(void *)) {
  void *p = NULL;
  if (napi_get_instance_data(env, &p) != napi_ok) return NULL;
  instance *in = p;
  if (in == NULL) {
    in = calloc(1, sizeof *in);
    if (in == NULL) return NULL;
    if (napi_set_instance_data(env, in, instance_free, NULL) != napi_ok) {
      free(in);
      return NULL;
    }
  }
  if (in->data[slot] == NULL) {
    in->data[slot] = create();
    in->destroy[slot] = destroy;
  }
  return in->data[slot];
}
