/* net_inject.c: the attacker of tests/security/test_network.py. Sends an IPv4 UDP datagram, or
 * a TCP SYN (then, if a SYN-ACK comes back, ACK + data), to DST:DPORT in an Ethernet frame for
 * GWMAC out of IFACE, whatever the routing table says: a container root with CAP_NET_RAW
 * aiming at the host's loopback services through its bridge. Source: IFACE's address, or SRC.
 * Exit 0: sent (udp) / handshake answered (tcp); 1: no SYN-ACK; 2: usage or socket error.
 * Also: "udpsend IP PORT DATA" and "udprecv PORT SECONDS" (plain sockets, prints "got DATA"). */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static unsigned short csum(const void *p, int n, unsigned int s) {
    const unsigned short *w = p;
    while (n > 1) { s += *w++; n -= 2; }
    if (n) s += *(const unsigned char *)w;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (unsigned short)~s;
}

static unsigned int pseudo(unsigned int src, unsigned int dst, int proto, int len) {
    unsigned int s = 0;
    s += (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff);
    s += htons(proto) + htons(len);
    return s;
}

static int fd, ifindex;
static unsigned char mac[6];
static unsigned int src, dst;

static void send_ip(unsigned char *pkt, int len) {
    struct sockaddr_ll a = {0};
    a.sll_family = AF_PACKET; a.sll_protocol = htons(ETH_P_IP); a.sll_ifindex = ifindex;
    a.sll_halen = 6; memcpy(a.sll_addr, mac, 6);
    if (sendto(fd, pkt, len, 0, (struct sockaddr *)&a, sizeof a) < 0) { perror("sendto"); exit(2); }
}

static int ip_hdr(unsigned char *p, int proto, int len) {
    memset(p, 0, 20);
    p[0] = 0x45; p[2] = len >> 8; p[3] = len & 0xff; p[4] = 0x12; p[5] = 0x34; p[8] = 64; p[9] = proto;
    memcpy(p + 12, &src, 4); memcpy(p + 16, &dst, 4);
    unsigned short c = csum(p, 20, 0); memcpy(p + 10, &c, 2);
    return 20;
}

static void tcp(unsigned char *p, unsigned short sport, unsigned short dport, unsigned int seq,
                unsigned int ack, int flags, const char *data) {
    int dl = data ? strlen(data) : 0, len = 40 + dl;
    unsigned char *t = p + ip_hdr(p, 6, len);
    memset(t, 0, 20);
    unsigned short s = htons(sport), d = htons(dport); unsigned int q = htonl(seq), k = htonl(ack);
    memcpy(t, &s, 2); memcpy(t + 2, &d, 2); memcpy(t + 4, &q, 4); memcpy(t + 8, &k, 4);
    t[12] = 5 << 4; t[13] = flags; t[14] = 0xff; t[15] = 0xff;
    if (dl) memcpy(t + 20, data, dl);
    unsigned short c = csum(t, 20 + dl, pseudo(src, dst, 6, 20 + dl)); memcpy(t + 16, &c, 2);
    send_ip(p, len);
}

/* plain UDP through the kernel's routing, for reachability checks between containers */
static int plain_udp(int argc, char **argv) {
    struct sockaddr_in a = {0};
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    a.sin_family = AF_INET;
    if (!strcmp(argv[1], "udpsend") && argc == 5) {
        a.sin_port = htons(atoi(argv[3]));
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) return 2;
        for (int i = 0; i < 3; i++) {
            sendto(s, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&a, sizeof a);
            usleep(100000);
        }
        return 0;
    }
    if (!strcmp(argv[1], "udprecv") && argc == 4) {
        char buf[512];
        a.sin_port = htons(atoi(argv[2]));
        struct timeval tv = {atoi(argv[3]), 0};
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 2; }
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int n = recv(s, buf, sizeof buf - 1, 0);
        if (n <= 0) { printf("nothing\n"); return 1; }
        buf[n] = 0;
        printf("got %s\n", buf);
        return 0;
    }
    return 2;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strncmp(argv[1], "udp", 3) && strcmp(argv[1], "udp")) return plain_udp(argc, argv);
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: net_inject udp|tcp IFACE GWMAC DST DPORT DATA [SRC]\n");
        return 2;
    }
    const char *mode = argv[1], *data = argv[6];
    int dport = atoi(argv[5]);
    if (sscanf(argv[3], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", mac, mac+1, mac+2, mac+3, mac+4, mac+5) != 6) return 2;
    if (inet_pton(AF_INET, argv[4], &dst) != 1) return 2;
    ifindex = if_nametoindex(argv[2]);
    fd = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
    if (fd < 0 || !ifindex) { perror("socket"); return 2; }
    struct ifreq ifr = {0}; strncpy(ifr.ifr_name, argv[2], IFNAMSIZ - 1); ifr.ifr_addr.sa_family = AF_INET;
    if (ioctl(fd, SIOCGIFADDR, &ifr) < 0) { perror("SIOCGIFADDR"); return 2; }
    src = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
    if (argc == 8 && inet_pton(AF_INET, argv[7], &src) != 1) return 2;
    struct sockaddr_ll b = {0};
    b.sll_family = AF_PACKET; b.sll_protocol = htons(ETH_P_IP); b.sll_ifindex = ifindex;
    if (bind(fd, (struct sockaddr *)&b, sizeof b) < 0) { perror("bind"); return 2; }
    unsigned char pkt[1600];
    if (!strcmp(mode, "udp")) {
        int dl = strlen(data), len = 28 + dl;
        unsigned char *u = pkt + ip_hdr(pkt, 17, len);
        unsigned short s = htons(40000), d = htons(dport), l = htons(8 + dl), z = 0;
        memcpy(u, &s, 2); memcpy(u + 2, &d, 2); memcpy(u + 4, &l, 2); memcpy(u + 6, &z, 2);
        memcpy(u + 8, data, dl);
        unsigned short c = csum(u, 8 + dl, pseudo(src, dst, 17, 8 + dl)); memcpy(u + 6, &c, 2);
        for (int i = 0; i < 3; i++) { send_ip(pkt, len); usleep(50000); }
        return 0;
    }
    unsigned short sport = 40000 + getpid() % 20000;
    unsigned int seq = 0x1000 + getpid();
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int attempt = 0; attempt < 10; attempt++) {
        tcp(pkt, sport, dport, seq, 0, 0x02, NULL);
        unsigned char r[1600];
        for (int i = 0; i < 20; i++) {
            int n = recv(fd, r, sizeof r, 0);
            if (n < 40) break;
            int ihl = (r[0] & 15) * 4;
            unsigned short sp, dp; memcpy(&sp, r + ihl, 2); memcpy(&dp, r + ihl + 2, 2);
            if (r[9] != 6 || memcmp(r + 12, &dst, 4) || ntohs(sp) != dport || ntohs(dp) != sport) continue;
            if ((r[ihl + 13] & 0x12) != 0x12) continue;
            unsigned int their; memcpy(&their, r + ihl + 4, 4); their = ntohl(their);
            tcp(pkt, sport, dport, seq + 1, their + 1, 0x10, NULL);
            tcp(pkt, sport, dport, seq + 1, their + 1, 0x18, data);
            usleep(100000);
            tcp(pkt, sport, dport, seq + 1 + strlen(data), their + 1, 0x11, NULL);
            printf("synack\n");
            return 0;
        }
    }
    printf("no synack\n");
    return 1;
}
