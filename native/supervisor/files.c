/*
 * The pod's files for the supervisor (issue 12, "Files"): open/openat/openat2 of pod
 * paths (a memfd installed with ADDFD), the stat family, access, readlink, getdents64,
 * and in write mode mkdir/unlink/rename/truncate. Owned by branch i12-files.
 *
 * Skeleton: every handler lets the kernel run the call (the table in sv.h does not
 * notify these calls yet).
 */
#include "sv.h"

#define SV_CONTINUE_HANDLER(name, handler, notified) \
  void handler(struct sv_call *call) { sv_continue(call); }
SV_FILE_SYSCALLS(SV_CONTINUE_HANDLER)
SV_FILE_SYSCALLS_LEGACY(SV_CONTINUE_HANDLER)
#undef SV_CONTINUE_HANDLER
