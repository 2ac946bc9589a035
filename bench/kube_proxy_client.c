/* SPDX-License-Identifier: Apache-2.0
 *
 * The kube-proxy benchmark's traffic tool: one binary, two roles.
 *
 *   kpbench server PORT
 *       Accepts on 0.0.0.0:PORT forever, one connection at a time (the client
 *       is sequential). If the peer sends a request, the reply is the local
 *       address the connection arrived on, so the client learns which backend
 *       the load balancer picked without any help from the datapath.
 *
 *   kpbench client IP PORT SECONDS connect|rr
 *       A sequential loop of new TCP connections for SECONDS. `connect` times
 *       socket()+connect(); `rr` times socket()+connect()+one 32-byte request
 *       and its reply. Every connection is closed with SO_LINGER 0 (an RST), so
 *       no TIME_WAIT piles up and every connection is new to every conntrack.
 *       Prints one JSON line: count, errors, elapsed, p50/p99 latencies, its
 *       own CPU time, and (rr) how many replies each backend address gave.
 *
 * Written in C because a Python loop tops out near the rates being measured:
 * the point is the datapath's cost, not the interpreter's.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQ_LEN 32
#define MAX_BACKENDS 256
#define MAX_ERRORS 200

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int server(int port)
{
	int one = 1;
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};

	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(ls, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(ls, 4096) < 0) {
		fprintf(stderr, "server: cannot listen on port %d: %s\n", port, strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		char buf[REQ_LEN], reply[REQ_LEN];
		struct sockaddr_in local;
		socklen_t len = sizeof(local);
		int c = accept(ls, NULL, NULL);
		ssize_t n;

		if (c < 0)
			continue;
		n = read(c, buf, sizeof(buf));
		if (n > 0 && getsockname(c, (struct sockaddr *)&local, &len) == 0) {
			memset(reply, 0, sizeof(reply));
			inet_ntop(AF_INET, &local.sin_addr, reply, sizeof(reply));
			(void)!write(c, reply, sizeof(reply));
		}
		close(c);
	}
}

struct tally {
	char addr[REQ_LEN];
	long count;
};

static int client(const char *ip, int port, double seconds, int rr)
{
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct timeval tmo = {.tv_sec = 2};
	struct tally tallies[MAX_BACKENDS];
	int ntally = 0;
	size_t cap = 1 << 16, count = 0;
	uint64_t *lat = malloc(cap * sizeof(*lat));
	long errors = 0;
	char first_error[128] = "";
	uint64_t start, deadline, end;
	struct rusage ru;

	if (inet_pton(AF_INET, ip, &dst.sin_addr) != 1) {
		fprintf(stderr, "client: %s is not an IPv4 address\n", ip);
		return 2;
	}
	if (!lat)
		return 3;
	start = now_ns();
	deadline = start + (uint64_t)(seconds * 1e9);
	while (now_ns() < deadline && errors < MAX_ERRORS) {
		char req[REQ_LEN] = "spyglass kube-proxy bench", reply[REQ_LEN];
		uint64_t t0 = now_ns();
		int s = socket(AF_INET, SOCK_STREAM, 0);
		const char *what = NULL;

		if (s < 0) {
			what = "socket";
		} else {
			setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo));
			setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
			if (connect(s, (struct sockaddr *)&dst, sizeof(dst)) < 0)
				what = "connect";
			else if (rr && write(s, req, sizeof(req)) != sizeof(req))
				what = "write";
			else if (rr && read(s, reply, sizeof(reply)) != sizeof(reply))
				what = "read";
		}
		if (what) {
			if (!errors)
				snprintf(first_error, sizeof(first_error), "%s: %s", what,
					 strerror(errno ? errno : EIO));
			errors++;
		} else {
			if (count == cap) {
				uint64_t *grown = realloc(lat, 2 * cap * sizeof(*lat));
				if (!grown)
					break;
				lat = grown;
				cap *= 2;
			}
			lat[count++] = now_ns() - t0;
			if (rr) {
				int i;
				reply[REQ_LEN - 1] = 0;
				for (i = 0; i < ntally && strcmp(tallies[i].addr, reply); i++)
					;
				if (i == ntally && ntally < MAX_BACKENDS) {
					memcpy(tallies[i].addr, reply, REQ_LEN);
					tallies[i].count = 0;
					ntally++;
				}
				if (i < ntally)
					tallies[i].count++;
			}
		}
		if (s >= 0) {
			setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(s);
		}
	}
	end = now_ns();
	getrusage(RUSAGE_SELF, &ru);
	qsort(lat, count, sizeof(*lat), cmp_u64);
	printf("{\"count\": %zu, \"errors\": %ld, \"first_error\": \"%s\", \"elapsed_s\": %.6f, "
	       "\"p50_us\": %.3f, \"p99_us\": %.3f, \"user_s\": %.6f, \"sys_s\": %.6f, "
	       "\"replies\": {",
	       count, errors, first_error, (end - start) / 1e9,
	       count ? lat[count / 2] / 1e3 : 0.0, count ? lat[(count * 99) / 100] / 1e3 : 0.0,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	for (int i = 0; i < ntally; i++)
		printf("%s\"%s\": %ld", i ? ", " : "", tallies[i].addr, tallies[i].count);
	printf("}}\n");
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "server"))
		return server(atoi(argv[2]));
	if (argc == 6 && !strcmp(argv[1], "client") &&
	    (!strcmp(argv[5], "connect") || !strcmp(argv[5], "rr")))
		return client(argv[2], atoi(argv[3]), atof(argv[4]), !strcmp(argv[5], "rr"));
	fprintf(stderr, "usage: %s server PORT | client IP PORT SECONDS connect|rr\n", argv[0]);
	return 2;
}
