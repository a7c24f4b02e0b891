/* bench/seccomp-udp.ts's probe, built there with musl-gcc -static (never committed as a
 * binary): what a receive costs a program under the seccomp supervisor, on descriptors
 * nothing was relayed for. For each of recvfrom with a source buffer and recvmsg with a
 * msg_name, on an empty UDP socket and on a TCP socket, MSG_DONTWAIT (EAGAIN/ENOTCONN at
 * once, so only the system call's own path is measured): the median µs per call over
 * batches, and the context switches per call (getrusage: load-independent; a
 * notified call that the supervisor answers switches about once). With HOST PORT, a
 * datagram goes there first from another socket, so the session has a relayed flow.
 * Besides: socket() + close() of a UDP socket (notified, placed in the window) and of a
 * TCP one.
 * One JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 200
#define BATCHES 25

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static long switches(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_nvcsw + u.ru_nivcsw;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void measure(const char *name, int fd, int use_msg, int comma) {
  double per[BATCHES];
  long before = switches();
  char buf[64];
  struct sockaddr_storage from;
  for (int b = 0; b < BATCHES; b++) {
    double t0 = now_us();
    for (int i = 0; i < BATCH; i++) {
      socklen_t len = sizeof from;
      if (use_msg) {
        struct iovec iov = {buf, sizeof buf};
        struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1};
        (void)recvmsg(fd, &m, MSG_DONTWAIT);
      } else {
        (void)recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &len);
      }
    }
    per[b] = (now_us() - t0) / BATCH;
  }
  double cs = (double)(switches() - before) / (BATCH * BATCHES);
  qsort(per, BATCHES, sizeof per[0], cmp);
  printf("%s\"%s\":{\"us\":%.2f,\"switches\":%.2f,\"fd\":%d}", comma ? "," : "", name, per[BATCHES / 2], cs, fd);
}

/* socket() + close() of a UDP (notified: placed in the window) or TCP socket. */
static void measure_socket(const char *name, int type) {
  double per[BATCHES];
  long before = switches();
  int fd = -1;
  for (int b = 0; b < BATCHES; b++) {
    double t0 = now_us();
    for (int i = 0; i < BATCH; i++) {
      fd = socket(AF_INET, type, 0);
      close(fd);
    }
    per[b] = (now_us() - t0) / BATCH;
  }
  double cs = (double)(switches() - before) / (BATCH * BATCHES);
  qsort(per, BATCHES, sizeof per[0], cmp);
  printf(",\"%s\":{\"us\":%.2f,\"switches\":%.2f,\"fd\":%d}", name, per[BATCHES / 2], cs, fd);
}

int main(int argc, char **argv) {
  if (argc == 3) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", argv[1]); return 2; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof to) < 0) { perror("sendto"); return 3; }
  }
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in any = {.sin_family = AF_INET};
  if (bind(udp, (struct sockaddr *)&any, sizeof any) < 0) { perror("bind"); return 3; }
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  printf("{");
  measure("udp_recvfrom", udp, 0, 0);
  measure("udp_recvmsg", udp, 1, 1);
  measure("tcp_recvfrom", tcp, 0, 1);
  measure("tcp_recvmsg", tcp, 1, 1);
  measure_socket("udp_socket", SOCK_DGRAM);
  measure_socket("tcp_socket", SOCK_STREAM);
  printf("}\n");
  return 0;
}
