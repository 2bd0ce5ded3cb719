// CNet: what swhv's TAP backend needs from <linux/if_tun.h> and rtnetlink that Swift cannot import
// or build comfortably: the TUN ioctl request numbers (function-like _IOW/_IOR macros) and the
// struct ifreq / sockaddr_nl calls around them (unions and padded structs).
#ifndef CNET_H
#define CNET_H

#include <errno.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static inline unsigned long cnet_tunsetiff(void) { return TUNSETIFF; }
static inline unsigned long cnet_tunsetoffload(void) { return TUNSETOFFLOAD; }
static inline unsigned long cnet_tunsetvnethdrsz(void) { return TUNSETVNETHDRSZ; }
static inline unsigned long cnet_tungetfeatures(void) { return TUNGETFEATURES; }

/// Attaches `fd` (an open /dev/net/tun) to the existing interface `name` with `flags`
/// (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR). 0, or -1 with errno.
static inline int cnet_tap_attach(int fd, const char *name, short flags) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = flags;
    return ioctl(fd, TUNSETIFF, &ifr);
}

/// TUNSETVNETHDRSZ. 0, or -1 with errno.
static inline int cnet_tap_set_vnet_header_size(int fd, int size) {
    return ioctl(fd, TUNSETVNETHDRSZ, &size);
}

/// TUNSETOFFLOAD (TUN_F_* bits). 0, or -1 with errno (EINVAL: the host lacks one of them).
static inline int cnet_tap_set_offload(int fd, unsigned int flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags);
}

/// TUNGETFEATURES: the IFF_* flags this host's tun driver supports. 0, or -1 with errno.
static inline int cnet_tun_features(int fd, unsigned int *features) {
    return ioctl(fd, TUNGETFEATURES, features);
}

/// A NETLINK_ROUTE socket subscribed to link changes (RTMGRP_LINK), non-blocking. fd or -1.
static inline int cnet_link_monitor_open(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
    if (fd < 0) return -1;
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof sa);
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_LINK;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

/// Asks the kernel for interface `index` (RTM_GETLINK); the answer arrives on `fd` as an
/// RTM_NEWLINK message like the change notifications. 0, or -1 with errno.
static inline int cnet_link_request(int fd, int index) {
    struct { struct nlmsghdr h; struct ifinfomsg i; } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = RTM_GETLINK;
    req.h.nlmsg_flags = NLM_F_REQUEST;
    req.h.nlmsg_seq = 1;
    req.i.ifi_family = AF_UNSPEC;
    req.i.ifi_index = index;
    return send(fd, &req, sizeof req, 0) == (ssize_t)sizeof req ? 0 : -1;
}

#endif
