/*
 * Outgoing sockets for the supervisor: connect, sendto/sendmsg/sendmmsg, getpeername,
 * getsockname.
 */
#include "sv.h"

void sv_connect(struct sv_call *call) { sv_continue(call); }
void sv_sendto(struct sv_call *call) { sv_continue(call); }
void sv_sendmsg(struct sv_call *call) { sv_continue(call); }
void sv_sendmmsg(struct sv_call *call) { sv_continue(call); }
void sv_getpeername(struct sv_call *call) {
  if (sv_incoming_name(call, -1, true)) return; /* a connection relayed from the pod (listen.c) */
  sv_continue(call);
}
void sv_getsockname(struct sv_call *call) {
  if (sv_incoming_name(call, -1, false)) return; /* the same, or a listener bound elsewhere */
  sv_continue(call);
}
