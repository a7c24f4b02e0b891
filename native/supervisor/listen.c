/*
 * Incoming traffic for the supervisor (issue 12, "Sockets"): bind/listen/accept/accept4
 * (a port taken locally is bound elsewhere; accept reports the pod's client, from the
 * proxy's peer answer). Owned by branch i12-incoming.
 *
 * Skeleton: every handler lets the kernel run the call (the table in sv.h does not
 * notify these calls yet).
 */
#include "sv.h"

#define SV_CONTINUE_HANDLER(name, handler, notified) \
  void handler(struct sv_call *call) { sv_continue(call); }
SV_LISTEN_SYSCALLS(SV_CONTINUE_HANDLER)
#undef SV_CONTINUE_HANDLER
