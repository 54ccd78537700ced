/* scripts/floor-agent.c: the cheapest agent a client can talk to, for scripts/bench.
 *
 * It answers every request from canned bytes (the real agent's own answers, captured
 * by scripts/bench): REQUEST_IDENTITIES with IDS, SIGN_REQUEST with SIG, anything else
 * with SSH_AGENT_SUCCESS. It never parses, logs or signs. Its CPU per request is what
 * the kernel charges a server for one request/response on a Unix socket (a read, a
 * write that wakes the client, a sleep and a wake-up): the floor under any agent's
 * "CPU per signature" on this machine. One connection at a time, blocking I/O.
 *
 *     cc -O2 -o floor-agent scripts/floor-agent.c
 *     floor-agent SOCKET IDS_FILE SIG_FILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    static unsigned char buf[1 << 16];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    unsigned char *copy = malloc(*len);
    memcpy(copy, buf, *len);
    return copy;
}

/* Read until `buf` holds `want` bytes (it holds `*have`): usually a single read, since
 * a client writes a whole request at once. */
static int fill(int fd, unsigned char *buf, size_t *have, size_t want) {
    while (*have < want) {
        ssize_t r = read(fd, buf + *have, (1 << 18) - *have);
        if (r <= 0)
            return -1;
        *have += (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor-agent SOCKET IDS_FILE SIG_FILE\n");
        return 2;
    }
    size_t ids_len, sig_len;
    unsigned char *ids = slurp(argv[2], &ids_len);
    unsigned char *sig = slurp(argv[3], &sig_len);
    static const unsigned char ok[5] = {0, 0, 0, 1, 6};
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    unlink(argv[1]);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 16)) {
        perror(argv[1]);
        return 1;
    }
    static unsigned char buf[1 << 18];
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            continue;
        size_t have = 0;
        while (fill(c, buf, &have, 4) == 0) {
            size_t n = (size_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3];
            if (n == 0 || n > sizeof buf - 4 || fill(c, buf, &have, 4 + n))
                break;
            const unsigned char *out = ok;
            size_t out_len = sizeof ok;
            if (buf[4] == 11) {
                out = ids, out_len = ids_len;
            } else if (buf[4] == 13) {
                out = sig, out_len = sig_len;
            }
            if (write(c, out, out_len) != (ssize_t)out_len)
                break;
            have -= 4 + n;
            memmove(buf, buf + 4 + n, have);
        }
        close(c);
    }
}
