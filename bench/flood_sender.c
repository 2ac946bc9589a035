/* A paced UDP flood for bench/collector_e2e.py: run inside the sender pod's netns.
 *
 *   flood_sender DST_IP DST_PORT RATE SECONDS [PAYLOAD [SPORT [PROBE_SPORT [PROBE_MS]]]]
 *
 * Sends PAYLOAD-byte UDP datagrams (default 64) from SPORT (default 40000) to
 * DST_IP:DST_PORT with sendmmsg, 64 per call. RATE > 0 paces the bursts on
 * CLOCK_MONOTONIC (burst k is sent at start + k * 64 / RATE, with clock_nanosleep
 * TIMER_ABSTIME; a late burst is sent at once, so the mean rate holds); RATE 0 sends
 * as fast as sendmmsg returns. Every PROBE_MS milliseconds (default 10; 0: none) one
 * more datagram goes from PROBE_SPORT (default 40001): the bench follows only those
 * (a filter on the source port), so that measuring latency costs the agent little at
 * any rate. Probes count in `sent`.
 *
 * Optional, by environment (the arguments above keep their meaning): with
 * FLOOD_SPLIT_SPORT=PORT, after every FLOOD_SPLIT_EVERY - 1 flood datagrams (default
 * 100: 1% of the flood) one more goes from PORT, so that a filter on that source port
 * selects a known share of the flood. Split datagrams count in `sent` and in `split`.
 *
 * Prints one JSON line: {"sent", "probes", "split", "errors", "first_error",
 * "elapsed_s", "user_s", "sys_s"}; `sent` counts the datagrams the kernel accepted.
 *
 * cc -O2 -Wall -o flood_sender flood_sender.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BURST 64
#define MAX_PAYLOAD 1400

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000ull),
			      .tv_nsec = (long)(t_ns % 1000000000ull)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int udp_socket(uint16_t sport, const struct sockaddr_in *dst)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		exit(2);
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(sport)};
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
		perror("bind");
		exit(2);
	}
	if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) < 0) {
		perror("connect");
		exit(2);
	}
	return fd;
}

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s DST_IP DST_PORT RATE SECONDS [PAYLOAD [SPORT "
				"[PROBE_SPORT [PROBE_MS]]]]\n", argv[0]);
		return 2;
	}
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", argv[1]);
		return 2;
	}
	double rate = atof(argv[3]);
	double seconds = atof(argv[4]);
	int payload = argc > 5 ? atoi(argv[5]) : 64;
	uint16_t sport = (uint16_t)(argc > 6 ? atoi(argv[6]) : 40000);
	uint16_t probe_sport = (uint16_t)(argc > 7 ? atoi(argv[7]) : 40001);
	double probe_ms = argc > 8 ? atof(argv[8]) : 10.0;
	if (payload < 1 || payload > MAX_PAYLOAD || seconds <= 0 || rate < 0) {
		fprintf(stderr, "payload must be 1..%d, seconds > 0, rate >= 0\n", MAX_PAYLOAD);
		return 2;
	}

	const char *split_env = getenv("FLOOD_SPLIT_SPORT");
	const char *every_env = getenv("FLOOD_SPLIT_EVERY");
	int split_port = split_env && *split_env ? atoi(split_env) : 0;
	long split_every = every_env && *every_env ? atol(every_env) : 100;
	if (split_port < 0 || split_port > 65535 || split_every < 2) {
		fprintf(stderr, "FLOOD_SPLIT_SPORT must be 0..65535, FLOOD_SPLIT_EVERY >= 2\n");
		return 2;
	}

	int fd = udp_socket(sport, &dst);
	int probe_fd = probe_ms > 0 ? udp_socket(probe_sport, &dst) : -1;
	int split_fd = split_port > 0 ? udp_socket((uint16_t)split_port, &dst) : -1;

	static char buf[BURST][MAX_PAYLOAD];
	struct iovec iov[BURST];
	struct mmsghdr msgs[BURST];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BURST; i++) {
		memset(buf[i], 'x', (size_t)payload);
		iov[i].iov_base = buf[i];
		iov[i].iov_len = (size_t)payload;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	uint64_t sent = 0, probes = 0, split = 0, flood = 0, errors = 0;
	int first_error = 0;
	const uint64_t t0 = now_ns();
	const uint64_t end = t0 + (uint64_t)(seconds * 1e9);
	const double burst_ns = rate > 0 ? 1e9 * BURST / rate : 0;
	const uint64_t probe_ns = (uint64_t)(probe_ms * 1e6);
	uint64_t next_probe = t0;
	uint64_t k = 0;

	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		if (probe_fd >= 0 && now >= next_probe) {
			if (send(probe_fd, buf[0], (size_t)payload, 0) == payload) {
				probes++;
				sent++;
			} else {
				errors++;
				if (!first_error)
					first_error = errno;
			}
			next_probe += probe_ns;
			if (next_probe < now)
				next_probe = now + probe_ns;
		}
		if (rate > 0) {
			uint64_t due = t0 + (uint64_t)(burst_ns * (double)k);
			if (due > now) {
				uint64_t wake = due;
				if (probe_fd >= 0 && next_probe < wake)
					wake = next_probe;
				if (end < wake)
					wake = end;
				sleep_until(wake);
				continue; /* a probe may be due first; the burst is next */
			}
		}
		int off = 0;
		while (off < BURST) {
			int n = sendmmsg(fd, msgs + off, (unsigned int)(BURST - off), 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				errors++;
				if (!first_error)
					first_error = errno;
				if ((errno == ENOBUFS || errno == EAGAIN) && now_ns() < end)
					continue; /* the qdisc or the socket is full: try again */
				break;
			}
			off += n;
			sent += (uint64_t)n;
			flood += (uint64_t)n;
		}
		/* One split datagram per split_every - 1 flood datagrams: 1/split_every of all. */
		while (split_fd >= 0 && flood / (uint64_t)(split_every - 1) > split) {
			if (send(split_fd, buf[0], (size_t)payload, 0) == payload) {
				split++;
				sent++;
			} else {
				errors++;
				if (!first_error)
					first_error = errno;
				if ((errno != ENOBUFS && errno != EAGAIN) || now_ns() >= end)
					break;
			}
		}
		k++;
	}
	double elapsed = (double)(now_ns() - t0) / 1e9;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"sent\": %llu, \"probes\": %llu, \"split\": %llu, \"errors\": %llu, "
	       "\"first_error\": \"%s\", \"elapsed_s\": %.6f, \"user_s\": %.6f, \"sys_s\": %.6f}\n",
	       (unsigned long long)sent, (unsigned long long)probes, (unsigned long long)split,
	       (unsigned long long)errors,
	       first_error ? strerror(first_error) : "", elapsed, tv_s(ru.ru_utime),
	       tv_s(ru.ru_stime));
	close(fd);
	if (probe_fd >= 0)
		close(probe_fd);
	if (split_fd >= 0)
		close(split_fd);
	return 0;
}
