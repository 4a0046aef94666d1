/* SPDX-License-Identifier: Apache-2.0 */
/*
 * x86_64 clone3 trampoline and a raw syscall helper (see clone3.h). Written in
 * top-level asm so no compiler-generated prologue, sanitizer instrumentation
 * or stack protector runs on the child's side before fn gets control.
 */
#include "clone3.h"

#if !defined(__x86_64__)
#error "kiln's clone3 trampoline is x86_64 only"
#endif

/*
 * long kl_clone3(struct clone_args *args (rdi), size_t size (rsi),
 *                int (*fn)(void *) (rdx), void *arg (rcx))
 * rdx and r8 survive the syscall instruction (only rcx, r11, rax are clobbered).
 */
__asm__(".text\n"
        ".globl kl_clone3\n"
        ".type kl_clone3,@function\n"
        "kl_clone3:\n"
        "	mov %rcx, %r8\n"
        "	mov $435, %eax\n" /* __NR_clone3 */
        "	syscall\n"
        "	test %rax, %rax\n"
        "	jz 1f\n"
        "	ret\n" /* parent: pid or -errno */
        "1:\n"
        "	xor %ebp, %ebp\n" /* child: fresh stack from args->stack */
        "	and $-16, %rsp\n"
        "	mov %r8, %rdi\n"
        "	call *%rdx\n"
        "	mov %eax, %edi\n"
        "	mov $60, %eax\n" /* __NR_exit */
        "	syscall\n"
        "	hlt\n"
        ".size kl_clone3, .-kl_clone3\n");

/* long kl_syscall6(n, a, b, c, d, e, f): rdi=n rsi=a rdx=b rcx=c r8=d r9=e [rsp+8]=f */
__asm__(".text\n"
        ".globl kl_syscall6\n"
        ".type kl_syscall6,@function\n"
        "kl_syscall6:\n"
        "	mov %rdi, %rax\n"
        "	mov %rsi, %rdi\n"
        "	mov %rdx, %rsi\n"
        "	mov %rcx, %rdx\n"
        "	mov %r8, %r10\n"
        "	mov %r9, %r8\n"
        "	mov 8(%rsp), %r9\n"
        "	syscall\n"
        "	ret\n"
        ".size kl_syscall6, .-kl_syscall6\n");
