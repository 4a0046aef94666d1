/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tool-process seccomp filter (see syscall_filter.h). Argument filters cover
 * the cases where a syscall is fine except for some flags: clone/unshare with
 * CLONE_NEWUSER, socket/socketpair of AF_NETLINK, AF_PACKET or SOCK_RAW, and
 * ioctl TIOCSTI/TIOCLINUX (terminal injection, CVE-2017-5226). AF_VSOCK is
 * denied too: vsock is not confined by the network namespace, so on a VM it
 * would reach the hypervisor's services past the lo-only netns. clone3 passes
 * its flags in memory that seccomp cannot read, so it is ENOSYS and libc
 * falls back to clone. Int arguments are compared on their low 32 bits only:
 * the kernel ignores the upper half of the register, a 64-bit compare does
 * not (tests/probe/probe.c tries both).
 */
#include "syscall_filter.h"

#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

const char *const node_seccomp_denied[] = {
        "mount",
        "umount2",
        "pivot_root",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kexec_load",
        "kexec_file_load",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "open_by_handle_at",
        "name_to_handle_at",
        "init_module",
        "finit_module",
        "delete_module",
        "swapon",
        "swapoff",
        "reboot",
        "syslog",
        "acct",
        "quotactl",
        "quotactl_fd",
        "setns",
        "userfaultfd",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
        "lookup_dcookie",
        "uselib",
        "vhangup",
        "fanotify_init",
        "chroot",
        "personality",
        "set_mempolicy",
        "mbind",
        "migrate_pages",
        "move_pages",
        "kcmp",
        "pidfd_getfd",
        "landlock_create_ruleset",
        NULL,
};

static const char *const enosys[] = {"io_uring_setup", "io_uring_enter", "io_uring_register", NULL};

static int
deny_list(scmp_filter_ctx ctx, const char *const *names, uint32_t action)
{
	for (int i = 0; names[i]; i++) {
		int nr = seccomp_syscall_resolve_name(names[i]);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture */
		int r = seccomp_rule_add(ctx, action, nr, 0);
		if (r < 0)
			return r;
	}
	return 0;
}

static int
deny_args(scmp_filter_ctx ctx)
{
	const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
	int r = 0;
	/* clone only with CLONE_NEWUSER. unshare: everything but exactly
	 * CLONE_NEWCGROUP, which init's spawn children use (with a capability tool
	 * processes no longer have: for them the kernel refuses it too). NE on the
	 * whole register, so CLONE_NEWCGROUP | 1 << 32 is denied as well. */
	r |= seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
	                      SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
	r |= seccomp_rule_add(ctx, eperm, SCMP_SYS(unshare), 1,
	                      SCMP_A0(SCMP_CMP_NE, CLONE_NEWCGROUP));
	/* SCMP_CMP_EQ on the whole register let AF_NETLINK | 1 << 32 through. */
	static const int families[] = {AF_NETLINK, AF_PACKET, AF_VSOCK};
	for (size_t i = 0; i < KL_ARRAY_SIZE(families); i++) {
		r |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
		                      SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, families[i]));
		r |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socketpair), 1,
		                      SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, families[i]));
	}
	/* SOCK_RAW in the type's low nibble (flags such as SOCK_CLOEXEC sit above). */
	r |= seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1,
	                      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
	r |= seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1,
	                      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
	r |= seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1,
	                      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX));
	return r ? -EINVAL : 0;
}

/* libseccomp 2.5 exports to an fd only: go through a memfd. Releases ctx. */
static int
export_bpf(scmp_filter_ctx ctx, uint8_t **ret, size_t *ret_len)
{
	int fd = memfd_create("kiln-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		int e = -errno;
		seccomp_release(ctx);
		return e;
	}
	int r = seccomp_export_bpf(ctx, fd);
	seccomp_release(ctx);
	if (r < 0) {
		close(fd);
		return r;
	}
	char *buf, path[64];
	size_t len;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	r = kl_read_file_at(AT_FDCWD, path, 1 << 20, &buf, &len);
	close(fd);
	if (r < 0)
		return r;
	*ret = (uint8_t *)buf;
	*ret_len = len;
	return 0;
}

static scmp_filter_ctx
new_ctx(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	/* Other ABIs are not added, so their calls hit the bad-arch action: kill. */
	if (ctx && seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0) {
		seccomp_release(ctx);
		return NULL;
	}
	return ctx;
}

int
node_seccomp_build(uint8_t **ret, size_t *ret_len)
{
	scmp_filter_ctx ctx = new_ctx();
	if (!ctx)
		return -ENOMEM;
	int r = deny_list(ctx, node_seccomp_denied, SCMP_ACT_ERRNO(EPERM));
	if (r == 0)
		r = deny_list(ctx, enosys, SCMP_ACT_ERRNO(ENOSYS));
	if (r == 0)
		r = deny_args(ctx);
	if (r < 0) {
		seccomp_release(ctx);
		return r;
	}
	return export_bpf(ctx, ret, ret_len);
}

int
node_seccomp_build_child(uint8_t **ret, size_t *ret_len)
{
	scmp_filter_ctx ctx = new_ctx();
	if (!ctx)
		return -ENOMEM;
	int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r < 0) {
		seccomp_release(ctx);
		return r;
	}
	return export_bpf(ctx, ret, ret_len);
}
