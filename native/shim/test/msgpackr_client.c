/* Client side of codec-proxy.mjs: prints what the shim made of each answer. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
  struct addrinfo h = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_CANONNAME}, *res, *ai;
  int r = getaddrinfo("db", "80", &h, &res);
  printf("db: %d", r);
  for (ai = r ? NULL : res; ai; ai = ai->ai_next) printf(" fam%d", ai->ai_family);
  printf(" canon=%s\n", r ? "" : res->ai_canonname);
  if (!r) freeaddrinfo(res);
  int n = 0;
  r = getaddrinfo("big", "80", &h, &res);
  for (ai = r ? NULL : res; ai; ai = ai->ai_next) n++;
  printf("big: %d entries=%d\n", r, n);
  if (!r) freeaddrinfo(res);
  printf("nx: %d\n", getaddrinfo("nx", NULL, &h, &res));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1)};
  inet_pton(AF_INET, "10.9.9.9", &a.sin_addr);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  printf("connect1: %d errno=%d\n", r, errno);
  a.sin_port = htons(2);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  printf("connect2: %d errno=%d\n", r, errno);
  char host[1025];
  r = getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0, 0);
  printf("reverse: %d len=%zu\n", r, strlen(host));
  return 0;
}
