/*
 * A program that goes past the preload's hooks (io_uring, open and connect through
 * syscall()), for
 * the shim's notice (native/shim/unseen.c): run.sh and test/shim/unseen.test.ts run it
 * under the shim and look for the reports. "plain" does the same work through libc.
 * usage: bypass bypass|plain
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int raw = argc > 1 && strcmp(argv[1], "bypass") == 0;
  /* Loopback (refused at once): a connect the shim does not see goes to this machine. */
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  for (int i = 0; i < 2; i++) {
    if (raw) {
      unsigned char params[120] = {0}; /* struct io_uring_params */
      long ring = syscall(SYS_io_uring_setup, 1, params);
      if (ring >= 0) close((int)ring);
    }
    /* A path test/shim/unseen.test.ts sends to the pod (--fs-remote); local elsewhere. */
    const char *pod_file = "/srv/tsmirror-unseen/config";
    int f = raw ? (int)syscall(SYS_openat, AT_FDCWD, pod_file, O_RDONLY) : open(pod_file, O_RDONLY);
    if (f >= 0) close(f);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int r = raw ? (int)syscall(SYS_connect, s, &a, sizeof a) : connect(s, (struct sockaddr *)&a, sizeof a);
    (void)r;
    close(s);
  }
  printf("done\n");
  return 0;
}
