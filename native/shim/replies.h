/*
 * Reading the proxy's replies (docs/shim-ipc.md), table-driven: each reply is a table of
 * {key, kind, destination}, and one loop (reply_read_map) fills the destinations and says
 * which keys were present. Keys come from wire.h, generated from protocol/shim-wire.ts.
 * A reply that breaks the contract (a known key with a value of the wrong type, a string
 * that does not fit, a truncated frame) is malformed: the caller treats it as a broken
 * channel. Unknown keys are skipped, so the proxy may add fields.
 */
#ifndef TSMIRROR_REPLIES_H
#define TSMIRROR_REPLIES_H

#include "msgpack.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum reply_field_kind {
  RF_BOOL,    /* bool *: a bool */
  RF_INT,     /* int64_t *: an integer (or a whole float) */
  RF_STR,     /* char[cap]: a string that fits, without NUL */
  RF_OPT_STR, /* char[cap]: as RF_STR, but a value of another type is skipped */
  RF_TEXT,    /* char[cap]: a string, cut to fit; a value of another type is skipped */
  RF_STRINGS, /* a string or a list of strings (others skipped): each goes to each(key, value, dst) */
  RF_CUSTOM,  /* read(r, dst) reads the whole value */
};

struct reply_field {
  const char *key;
  enum reply_field_kind kind;
  void *dst;
  size_t cap;                                                 /* RF_STR, RF_OPT_STR, RF_TEXT */
  bool (*read)(struct mp_reader *r, void *dst);               /* RF_CUSTOM */
  void (*each)(const char *key, const char *value, void *dst); /* RF_STRINGS */
};

#define REPLY_MAX_FIELDS 64
#define RF_SEEN(seen, i) (((seen) >> (i)) & 1u)

/* Reads a map of n entries (its header already read) into the table; *seen gets bit i
 * for each field i present. False if the map is malformed. */
bool reply_read_map(struct mp_reader *r, uint32_t n, const struct reply_field *fields,
                    size_t nfields, uint64_t *seen);

/* Sends the request in w and reads the reply map into the table: 0, -1 if the channel
 * failed, -2 if the reply is malformed (or not a map). */
int reply_call(const struct mp_writer *w, const struct reply_field *fields, size_t nfields,
               uint64_t *seen);

/* The fields every reply may carry, first in each table (REPLY_COMMON_FIELDS). */
struct reply_common {
  bool ok;
  char action[16];
  int64_t err, eai;
  char message[WIRE_MAX_MESSAGE + 1];
};
enum { RC_OK, RC_ACTION, RC_ERRNO, RC_EAI, RC_MESSAGE, RC_COUNT };
#define REPLY_COMMON_FIELDS(c)                                   \
  {WIRE_KEY_OK, RF_BOOL, &(c)->ok, 0, NULL, NULL},                 \
  {WIRE_KEY_ACTION, RF_STR, (c)->action, sizeof (c)->action, NULL, NULL}, \
  {WIRE_KEY_ERRNO, RF_INT, &(c)->err, 0, NULL, NULL},              \
  {WIRE_KEY_EAI, RF_INT, &(c)->eai, 0, NULL, NULL},                \
  {WIRE_KEY_MESSAGE, RF_TEXT, (c)->message, sizeof (c)->message, NULL, NULL}

bool read_int(struct mp_reader *r, int64_t *out);

/* e if it is one of the n known errno values, else fallback. */
int sane_errno(int64_t e, const int *known, size_t n, int fallback);
/* What a socket call may return (else ECONNREFUSED); what a file call may (else EIO). */
int sane_net_errno(int64_t e);
int sane_file_errno(int64_t e);

#endif
