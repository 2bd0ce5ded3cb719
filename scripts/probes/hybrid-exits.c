// Probe: what KVM reports when native CPL3 code on kvm-pvm stops, per cause: exit reason, RIP,
// and the vector left in KVM_GET_VCPU_EVENTS (to tell traps, whose RIP is past the instruction,
// from faults). Also: port-I/O exit completion, dirty logging, TSC offset controls.
// Build: gcc -O2 -Wall hybrid-exits.c -o /tmp/hybrid-exits && /tmp/hybrid-exits
#define _GNU_SOURCE
#include <stdio.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <sys/mman.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int kvm, vm, vcpu; static struct kvm_run *run; static uint8_t *mem;
#define MSZ (4u<<20)
static void setcpl3(uint64_t rip, uint64_t rflags){
  struct kvm_sregs s; ioctl(vcpu,KVM_GET_SREGS,&s);
  struct kvm_segment seg={.base=0,.limit=0xffffffff,.selector=0x1b,.present=1,.type=11,.dpl=3,.db=0,.s=1,.l=1,.g=1};
  s.cs=seg; seg.type=3; seg.selector=0x23; seg.dpl=3; seg.l=0; seg.db=1; s.ds=s.es=s.fs=s.gs=s.ss=seg;
  s.cr3=0x1000; s.cr4=0x20|0x200|0x400; s.cr0=0x80050033; s.efer=0xd01;
  s.idt.base=0; s.idt.limit=0; s.gdt.base=0x5000; s.gdt.limit=0x3f;
  ioctl(vcpu,KVM_SET_SREGS,&s);
  struct kvm_regs r={.rip=rip,.rflags=rflags,.rsp=0x80000,.rax=0x1111222233334444ull,.rdx=0x80}; ioctl(vcpu,KVM_SET_REGS,&r);
}
static const char *en(int x){ static char b[32]; switch(x){case KVM_EXIT_IO:return "IO";case KVM_EXIT_SHUTDOWN:return "SHUTDOWN";case KVM_EXIT_HLT:return "HLT";case KVM_EXIT_INTERNAL_ERROR:return "INTERNAL";case KVM_EXIT_DEBUG:return "DEBUG";case KVM_EXIT_MMIO:return "MMIO";} snprintf(b,32,"%d",x); return b;}
static int go(void){ int rc=ioctl(vcpu,KVM_RUN,0); if(rc<0) return -errno; return run->exit_reason; }
static void code(uint64_t at, const char *bytes, size_t n){ memcpy(mem+at,bytes,n); }
static void one(const char *name, uint64_t rip, uint64_t rflags){
  setcpl3(rip,rflags); int x=go(); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); struct kvm_sregs s; ioctl(vcpu,KVM_GET_SREGS,&s);
  struct kvm_vcpu_events ev; ioctl(vcpu,KVM_GET_VCPU_EVENTS,&ev);
  printf("%-26s %-8s rip=+%#llx rfl=%#llx cr2=%#llx ev: exc inj=%d pend=%d nr=%d has_ec=%d ec=%#x flags=%#x shadow=%d nmi=%d int.inj=%d\n", name, en(x),
    (unsigned long long)(r.rip-rip), (unsigned long long)r.rflags, (unsigned long long)s.cr2, ev.exception.injected, ev.exception.pending, ev.exception.nr,
    ev.exception.has_error_code, ev.exception.error_code, ev.flags, ev.interrupt.shadow, ev.nmi.injected, ev.interrupt.injected);
}
int main(void){
  setvbuf(stdout,NULL,_IONBF,0);
  kvm=open("/dev/kvm",O_RDWR|O_CLOEXEC); vm=ioctl(kvm,KVM_CREATE_VM,0);
  mem=mmap(NULL,MSZ,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);
  printf("MANUAL_DIRTY_LOG_PROTECT2=%d VCPU_ATTRIBUTES=%d\n", ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_VCPU_ATTRIBUTES));
  int mp=ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
  if(mp>0){ struct kvm_enable_cap c={.cap=KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2}; c.args[0]=mp&3; printf("enable manual protect: %d\n", ioctl(vm,KVM_ENABLE_CAP,&c)); }
  struct kvm_userspace_memory_region rg={.slot=0,.flags=KVM_MEM_LOG_DIRTY_PAGES,.guest_phys_addr=0,.memory_size=MSZ,.userspace_addr=(uint64_t)mem};
  printf("slot with dirty log: %d\n", ioctl(vm,KVM_SET_USER_MEMORY_REGION,&rg));
  uint64_t*pml4=(void*)(mem+0x1000),*pdpt=(void*)(mem+0x2000),*pd=(void*)(mem+0x3000),*pt=(void*)(mem+0x100000);
  pml4[0]=0x2000|7; pdpt[0]=0x3000|7; for(int i=0;i<2;i++) pd[i]=(0x100000+i*0x1000)|7; for(int i=0;i<1024;i++) pt[i]=(uint64_t)i*0x1000|7;
  uint64_t *gdt=(void*)(mem+0x5000); gdt[1]=0x00af9b000000ffffULL; gdt[2]=0x00cf93000000ffffULL; gdt[3]=0x00affb000000ffffULL; gdt[4]=0x00cff3000000ffffULL;
  vcpu=ioctl(vm,KVM_CREATE_VCPU,0); run=mmap(NULL,ioctl(kvm,KVM_GET_VCPU_MMAP_SIZE,0),PROT_READ|PROT_WRITE,MAP_SHARED,vcpu,0);
  struct {struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[100];} cp={.h.nent=100}; ioctl(kvm,KVM_GET_SUPPORTED_CPUID,&cp); ioctl(vcpu,KVM_SET_CPUID2,&cp);
  { struct {struct kvm_msrs h; struct kvm_msr_entry e[1];} m={.h.nmsrs=1}; m.e[0].index=0xc0000082; m.e[0].data=0x7ff000000000ull; ioctl(vcpu,KVM_SET_MSRS,&m); }
  code(0x10000,"\x0f\x05",2);                         // syscall
  code(0x10010,"\x48\x8b\x04\x25\x00\x00\x00\x40",8);  // #PF read
  code(0x10020,"\xcc",1);                             // int3
  code(0x10030,"\xcd\x80",2);                         // int 0x80
  code(0x10040,"\x0f\x0b",2);                         // ud2
  code(0x10050,"\xf4",1);                             // hlt -> #GP
  code(0x10060,"\x31\xd2\x48\xf7\xf2",5);             // #DE at +2
  code(0x10070,"\x90\x90\x90\x90",4);                 // nops (TF single-step)
  code(0x10080,"\xf1",1);                             // int1 / icebp
  code(0x10090,"\xe6\x80\x90",3);                     // out 0x80,al
  code(0x100a0,"\xe4\x80\x90",3);                     // in al,0x80
  code(0x100b0,"\x66\xed\x90",3);                     // in ax,dx
  code(0x100c0,"\xc7\x04\x25\x00\x00\x20\x00\x01\x00\x00\x00\xe6\x80",13); // mov dword [0x200000],1 ; out
  code(0x100d0,"\x48\xc7\x04\x25\x00\x00\x00\x00\x00\x00\x00\x00",12); // write to GVA 0 -> pt[0] maps 0 user-writable; fine
  code(0x100e0,"\x0f\x01\xf9",3);                     // rdtscp
  code(0x100f0,"\x0f\x00\xc8",3);                     // str eax (UMIP?)
  code(0x10100,"\x0f\x01\x00",3);                     // sgdt [rax]
  code(0x10110,"\x48\x8b\x04\x25\x00\x00\x00\x00\x0f\x0b",10); // mov rax,[0] ; ud2
  code(0x10120,"\xcd\x03",2);                         // int 3 (CD 03)
  code(0x10130,"\x0f\x34",2);                         // sysenter
  code(0x10140,"\xf3\x90\x0f\x1f\x00\xeb\xfa",7);     // pause; nopl; jmp back (for rflags tf)
  one("syscall", 0x10000, 0x202);
  one("#PF read", 0x10010, 0x202);
  one("int3", 0x10020, 0x202);
  one("int 0x80", 0x10030, 0x202);
  one("int 3 (CD 03)", 0x10120, 0x202);
  one("ud2", 0x10040, 0x202);
  one("hlt (#GP)", 0x10050, 0x202);
  one("#DE", 0x10060, 0x202);
  one("TF single-step nop", 0x10070, 0x302);
  one("int1 (F1)", 0x10080, 0x202);
  one("out 0x80", 0x10090, 0x202);
  one("sysenter", 0x10130, 0x202);
  one("rdtscp", 0x100e0, 0x202);
  { setcpl3(0x100f0,0x202); int x=go(); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); printf("str eax: %s rip=+%#llx rax=%#llx\n",en(x),(unsigned long long)(r.rip-0x100f0),(unsigned long long)r.rax); }
  { setcpl3(0x10100,0x202); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); r.rax=0x300000; ioctl(vcpu,KVM_SET_REGS,&r); int x=go(); ioctl(vcpu,KVM_GET_REGS,&r); printf("sgdt: %s rip=+%#llx [0x300000]=%#llx %#llx\n",en(x),(unsigned long long)(r.rip-0x10100),(unsigned long long)*(uint64_t*)(mem+0x300000),(unsigned long long)*(uint64_t*)(mem+0x300008)); }
  // IN: where is RIP, what happens to RAX if we SET_REGS before re-entering
  { setcpl3(0x100a0,0x202); int x=go(); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r);
    printf("in al,0x80: %s rip=+%#llx rax=%#llx io.port=%#x size=%d dir=%d count=%d\n",en(x),(unsigned long long)(r.rip-0x100a0),(unsigned long long)r.rax,run->io.port,run->io.size,run->io.direction,run->io.count);
    *((uint8_t*)run+run->io.data_offset)=0x5a;
    r.rip=0x10090; r.rax=0x77; ioctl(vcpu,KVM_SET_REGS,&r); x=go(); ioctl(vcpu,KVM_GET_REGS,&r);
    printf("  then SET_REGS rip->out 0x80, rax=0x77, KVM_RUN: %s rip=+%#llx from 0x10090, rax=%#llx (0x77 = our value kept)\n",en(x),(unsigned long long)(r.rip-0x10090),(unsigned long long)r.rax); }
  { setcpl3(0x100a0,0x202); int x=go(); (void)x; *((uint8_t*)run+run->io.data_offset)=0x5a; run->immediate_exit=1; int y=go(); run->immediate_exit=0; struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r);
    printf("  in + immediate_exit run: %s (%d) rip=+%#llx rax=%#llx\n", en(y), y, (unsigned long long)(r.rip-0x100a0),(unsigned long long)r.rax);
    r.rip=0x10090; ioctl(vcpu,KVM_SET_REGS,&r); x=go(); ioctl(vcpu,KVM_GET_REGS,&r); printf("  next run from 0x10090: %s rip=+%#llx\n",en(x),(unsigned long long)(r.rip-0x10090)); }
  { setcpl3(0x100b0,0x202); int x=go(); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); printf("in ax,dx (66 ED): %s rip=+%#llx size=%d\n",en(x),(unsigned long long)(r.rip-0x100b0),run->io.size); run->immediate_exit=1; go(); run->immediate_exit=0; }
  // dirty log
  { size_t nb=MSZ/4096/8; uint8_t *bm=calloc(1,nb); struct kvm_dirty_log dl={.slot=0}; dl.dirty_bitmap=bm;
    int r1=ioctl(vm,KVM_GET_DIRTY_LOG,&dl); int set=0; for(size_t i=0;i<nb;i++) set+=__builtin_popcount(bm[i]); printf("dirty log initially: rc %d, %d pages set\n", r1, set);
    if(mp>0){ struct kvm_clear_dirty_log c={.slot=0,.first_page=0x200,.num_pages=64}; uint64_t ones=~0ull; c.dirty_bitmap=&ones; printf("clear pages 0x200..0x23f: %d\n", ioctl(vm,KVM_CLEAR_DIRTY_LOG,&c)); }
    else { memset(bm,0,nb); }
    setcpl3(0x100c0,0x202); int x=go(); memset(bm,0,nb); ioctl(vm,KVM_GET_DIRTY_LOG,&dl); printf("after native write to 0x200000 (%s): bit 0x200=%d bit 0x201=%d\n", en(x), (bm[0x200/8]>>(0x200%8))&1, (bm[0x201/8]>>(0x201%8))&1);
    if(mp>0){ double t0=now(); for(int i=0;i<1000;i++){ struct kvm_clear_dirty_log c={.slot=0,.first_page=0x200,.num_pages=64}; uint64_t ones=~0ull; c.dirty_bitmap=&ones; ioctl(vm,KVM_CLEAR_DIRTY_LOG,&c);} printf("CLEAR_DIRTY_LOG 64 pages: %.1f us\n",(now()-t0)/1000*1e6);
      t0=now(); for(int i=0;i<1000;i++) ioctl(vm,KVM_GET_DIRTY_LOG,&dl); printf("GET_DIRTY_LOG 4 MiB slot: %.1f us\n",(now()-t0)/1000*1e6); }
    // native writes to a protected page: cost
    setcpl3(0x10090,0x202); go(); double t0=now(); for(int i=0;i<1000;i++){ setcpl3(0x100c0,0x202); go(); } double a=(now()-t0)/1000;
    t0=now(); for(int i=0;i<1000;i++){ struct kvm_clear_dirty_log c={.slot=0,.first_page=0x200,.num_pages=64}; uint64_t ones=~0ull; c.dirty_bitmap=&ones; if(mp>0) ioctl(vm,KVM_CLEAR_DIRTY_LOG,&c); setcpl3(0x100c0,0x202); go(); } double b=(now()-t0)/1000;
    printf("write+out episode: %.1f us unprotected, %.1f us with the page re-protected each time\n", a*1e6, b*1e6);
  }
  { struct kvm_device_attr at={.group=KVM_VCPU_TSC_CTRL,.attr=KVM_VCPU_TSC_OFFSET}; uint64_t off=0; at.addr=(uint64_t)&off;
    int h=ioctl(vcpu,KVM_HAS_DEVICE_ATTR,&at); int g=ioctl(vcpu,KVM_GET_DEVICE_ATTR,&at); printf("TSC offset attr: has %d get %d offset %lld\n", h, g, (long long)off);
    unsigned lo,hi; __asm__ volatile("rdtsc":"=a"(lo),"=d"(hi)); code(0x10150,"\x0f\x31\xe6\x80",4); setcpl3(0x10150,0x202); go(); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r);
    uint64_t host=((uint64_t)hi<<32)|lo, guest=(r.rdx<<32)|(uint32_t)r.rax; printf("host rdtsc %llu, guest rdtsc just after %llu (diff %lld)\n",(unsigned long long)host,(unsigned long long)guest,(long long)(guest-host));
    off=-1000000000ll; int s=ioctl(vcpu,KVM_SET_DEVICE_ATTR,&at); __asm__ volatile("rdtsc":"=a"(lo),"=d"(hi)); setcpl3(0x10150,0x202); go(); ioctl(vcpu,KVM_GET_REGS,&r); host=((uint64_t)hi<<32)|lo; guest=(r.rdx<<32)|(uint32_t)r.rax;
    printf("after SET offset -1e9 (rc %d): guest-host %lld\n", s, (long long)(guest-host)); }
  return 0;
}
