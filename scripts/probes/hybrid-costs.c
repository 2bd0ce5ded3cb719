// Probe: what a hybrid backend's transitions cost on this host's kvm-pvm, and which mechanisms keep
// KVM's shadow MMU coherent with page tables written through the host mapping.
// Build: gcc -O2 -Wall hybrid-costs.c -o /tmp/hybrid-costs && /tmp/hybrid-costs
#define _GNU_SOURCE
#include <stdio.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <sys/mman.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int kvm, vm, vcpu; static struct kvm_run *run; static uint8_t *mem;
#define MSZ (16u<<20)
static struct kvm_userspace_memory_region RG, DUMMY;
static uint64_t *pt; // 8 PT pages at 0x100000
static void onsig(int s){(void)s;}

static void setcpl3(uint64_t rip, uint64_t cr4extra){
  struct kvm_sregs s; ioctl(vcpu,KVM_GET_SREGS,&s);
  struct kvm_segment seg={.base=0,.limit=0xffffffff,.selector=0x1b,.present=1,.type=11,.dpl=3,.db=0,.s=1,.l=1,.g=1};
  s.cs=seg; seg.type=3; seg.selector=0x23; seg.dpl=3; seg.l=0; seg.db=1; s.ds=s.es=s.fs=s.gs=s.ss=seg;
  s.cr3=0x1000; s.cr4=0x20|0x200|0x400|cr4extra; s.cr0=0x80050033; s.efer=0xd01;
  s.idt.base=0; s.idt.limit=0; s.gdt.base=0x5000; s.gdt.limit=0x3f;
  if(ioctl(vcpu,KVM_SET_SREGS,&s)<0)perror("sregs");
  struct kvm_regs r={.rip=rip,.rflags=0x202,.rsp=0x80000}; if(ioctl(vcpu,KVM_SET_REGS,&r)<0)perror("regs");
}
static int go(void){ int rc=ioctl(vcpu,KVM_RUN,0); if(rc<0) return -errno; return run->exit_reason; }
static uint64_t getrax(void){ struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); return r.rax; }
static int setmsr(uint32_t i, uint64_t v){ struct {struct kvm_msrs h; struct kvm_msr_entry e[1];} m={.h.nmsrs=1}; m.e[0].index=i; m.e[0].data=v; return ioctl(vcpu,KVM_SET_MSRS,&m); }
static uint64_t getmsr(uint32_t i){ struct {struct kvm_msrs h; struct kvm_msr_entry e[1];} m={.h.nmsrs=1}; m.e[0].index=i; int n=ioctl(vcpu,KVM_GET_MSRS,&m); return n==1?m.e[0].data:0xdeadbeefdeadbeefull; }
static void slot_readd(struct kvm_userspace_memory_region *r){ struct kvm_userspace_memory_region z=*r; z.memory_size=0; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&z); ioctl(vm,KVM_SET_USER_MEMORY_REGION,r); }
static const char *en(int x){ static char b[32]; switch(x){case KVM_EXIT_IO:return "IO";case KVM_EXIT_SHUTDOWN:return "SHUTDOWN";case KVM_EXIT_HLT:return "HLT";case KVM_EXIT_INTERNAL_ERROR:return "INTERNAL";case KVM_EXIT_DEBUG:return "DEBUG";case KVM_EXIT_MMIO:return "MMIO";} snprintf(b,32,"%d",x); return b;}
static void code(uint64_t at, const char *bytes, size_t n){ memcpy(mem+at,bytes,n); }

int main(int argc, char **argv){
  setvbuf(stdout,NULL,_IONBF,0);
  const char *only = argc>1?argv[1]:"";
  kvm=open("/dev/kvm",O_RDWR|O_CLOEXEC); vm=ioctl(kvm,KVM_CREATE_VM,0);
  mem=mmap(NULL,MSZ,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  RG=(struct kvm_userspace_memory_region){.slot=0,.guest_phys_addr=0,.memory_size=MSZ,.userspace_addr=(uint64_t)mem};
  ioctl(vm,KVM_SET_USER_MEMORY_REGION,&RG);
  uint8_t *dm=mmap(NULL,4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  DUMMY=(struct kvm_userspace_memory_region){.slot=1,.guest_phys_addr=0xF0000000,.memory_size=4096,.userspace_addr=(uint64_t)dm};
  ioctl(vm,KVM_SET_USER_MEMORY_REGION,&DUMMY);
  uint64_t*pml4=(void*)(mem+0x1000),*pdpt=(void*)(mem+0x2000),*pd=(void*)(mem+0x3000); pt=(void*)(mem+0x100000);
  pml4[0]=0x2000|7; pdpt[0]=0x3000|7;
  for(int i=0;i<8;i++) pd[i]=(0x100000+i*0x1000)|7;
  for(int i=0;i<8*512;i++) pt[i]=(uint64_t)i*0x1000|7;
  uint64_t *gdt=(void*)(mem+0x5000); gdt[1]=0x00af9b000000ffffULL; gdt[2]=0x00cf93000000ffffULL; gdt[3]=0x00affb000000ffffULL; gdt[4]=0x00cff3000000ffffULL;
  vcpu=ioctl(vm,KVM_CREATE_VCPU,0); run=mmap(NULL,ioctl(kvm,KVM_GET_VCPU_MMAP_SIZE,0),PROT_READ|PROT_WRITE,MAP_SHARED,vcpu,0);
  struct {struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[100];} cp={.h.nent=100};
  ioctl(kvm,KVM_GET_SUPPORTED_CPUID,&cp);
  for(unsigned i=0;i<cp.h.nent;i++) if(cp.e[i].function==0){ cp.e[i].ebx=0x48575753; cp.e[i].edx=0x48575753; cp.e[i].ecx=0x48575753; } // "SWHV"
  ioctl(vcpu,KVM_SET_CPUID2,&cp);
  struct sigaction sa={0}; sa.sa_handler=onsig; sigaction(SIGUSR1,&sa,NULL); sigaction(SIGALRM,&sa,NULL);
  setmsr(0xc0000082,0x7ff000000000ull); // LSTAR: unmapped, canonical
  printf("caps: SYNC_REGS=%d TSC_CONTROL=%d DISABLE_QUIRKS2=%#x GET_TSC_KHZ=%d SET_GUEST_DEBUG=%d\n",
    ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_SYNC_REGS), ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_TSC_CONTROL),
    ioctl(vm,KVM_CHECK_EXTENSION,KVM_CAP_DISABLE_QUIRKS2), ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_GET_TSC_KHZ),
    ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_SET_GUEST_DEBUG));

  // code
  code(0x10000,"\xe6\x80\xeb\xfc",4);                 // 10000: out 0x80,al ; jmp 10000
  code(0x10010,"\x0f\x05",2);                         // 10010: syscall
  code(0x10020,"\x48\x8b\x04\x25\x00\x00\x00\x40",8);  // 10020: mov rax,[0x40000000] -> #PF
  code(0x10030,"\x31\xc0\x0f\xa2\xe6\x80",6);         // 10030: xor eax,eax; cpuid; out 0x80
  code(0x10040,"\x0f\x31\xe6\x80",4);                 // 10040: rdtsc; out
  code(0x10050,"\x48\xff\xc0\xeb\xfb",5);             // 10050: inc rax; jmp 10050
  code(0x10060,"\x48\x8b\x04\x25\x00\x00\x30\x00\xe6\x80",10); // 10060: mov rax,[0x300000]; out
  code(0x10070,"\x48\x8b\x04\x25\x00\x00\x40\x00\xe6\x80",10); // 10070: mov rax,[0x400000]; out
  // 10080: touch 1024 pages at 0x800000: mov rsi,0x800000; mov ecx,1024; l: mov rax,[rsi]; add rsi,4096; dec ecx; jnz l; out
  code(0x10080,"\x48\xc7\xc6\x00\x00\x80\x00\xb9\x00\x04\x00\x00\x48\x8b\x06\x48\x81\xc6\x00\x10\x00\x00\xff\xc9\x75\xf2\xe6\x80",28);
  code(0x100a0,"\x66\x0f\x6e\xc0\x66\x0f\x7e\xc0\xe6\x80",10); // movd xmm0,eax ; movd eax,xmm0 ; out
  code(0x100b0,"\x66\x0f\x7e\xc0\xe6\x80",6);          // movd eax,xmm0 ; out
  code(0x100c0,"\xcc",1);                              // int3
  int N; double t0;

  // T1: IO exit round trip from CPL3, no state transfer
  setcpl3(0x10000,0); go();
  N=20000; t0=now(); for(int i=0;i<N;i++) go(); printf("T1 IO exit at CPL3, KVM_RUN only: %.1f us\n",(now()-t0)/N*1e6);
  // with GET/SET REGS
  N=5000; t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); ioctl(vcpu,KVM_SET_REGS,&r); go(); } printf("T1b + GET/SET_REGS: %.1f us\n",(now()-t0)/N*1e6);
  N=5000; t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r; struct kvm_sregs s; ioctl(vcpu,KVM_GET_REGS,&r); ioctl(vcpu,KVM_GET_SREGS,&s); ioctl(vcpu,KVM_SET_SREGS,&s); ioctl(vcpu,KVM_SET_REGS,&r); go(); } printf("T1c + GET/SET_REGS+SREGS (same values): %.1f us\n",(now()-t0)/N*1e6);
  N=5000; t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r; struct kvm_sregs s; struct kvm_fpu f; ioctl(vcpu,KVM_GET_REGS,&r); ioctl(vcpu,KVM_GET_SREGS,&s); ioctl(vcpu,KVM_GET_FPU,&f); ioctl(vcpu,KVM_SET_FPU,&f); ioctl(vcpu,KVM_SET_SREGS,&s); ioctl(vcpu,KVM_SET_REGS,&r); go(); } printf("T1d + FPU too: %.1f us\n",(now()-t0)/N*1e6);
  N=5000; t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r; struct kvm_sregs s; ioctl(vcpu,KVM_GET_REGS,&r); ioctl(vcpu,KVM_GET_SREGS,&s); s.cr3 = (i&1)?0x1000:0x1000; s.cr4 ^= 0; s.cs.selector=0x1b; ioctl(vcpu,KVM_SET_SREGS,&s); ioctl(vcpu,KVM_SET_REGS,&r); struct {struct kvm_msrs h; struct kvm_msr_entry e[6];} m={.h.nmsrs=6}; uint32_t ix[6]={0xc0000100,0xc0000101,0xc0000102,0xc0000081,0xc0000082,0xc0000084}; for(int k=0;k<6;k++){m.e[k].index=ix[k]; m.e[k].data=k==4?0x7ff000000000ull:0;} ioctl(vcpu,KVM_SET_MSRS,&m); go(); } printf("T1e + SREGS + 6 MSRs: %.1f us\n",(now()-t0)/N*1e6);
  // sync regs
  if(ioctl(kvm,KVM_CHECK_EXTENSION,KVM_CAP_SYNC_REGS)>0){
    N=5000; t0=now(); for(int i=0;i<N;i++){ run->kvm_valid_regs=KVM_SYNC_X86_REGS|KVM_SYNC_X86_SREGS|KVM_SYNC_X86_EVENTS; run->kvm_dirty_regs=(i>0)?(KVM_SYNC_X86_REGS|KVM_SYNC_X86_SREGS):0; go(); } run->kvm_valid_regs=0; run->kvm_dirty_regs=0;
    printf("T1f sync_regs (valid regs+sregs+events, dirty regs+sregs): %.1f us\n",(now()-t0)/N*1e6);
  }

  // T2: SHUTDOWN round trips
  for(int v=0; v<2; v++){
    uint64_t rip = v? 0x10020 : 0x10010;
    N=2000; t0=now(); int bad=0; for(int i=0;i<N;i++){ setcpl3(rip,0); int x=go(); if(x!=KVM_EXIT_SHUTDOWN) bad++; }
    printf("T2 %s SHUTDOWN round trip (set sregs+regs): %.1f us (%d unexpected)\n", v?"#PF":"syscall", (now()-t0)/N*1e6, bad);
  }
  // what survives a shutdown
  setmsr(0xc0000102,0x1234000); setmsr(0xc0000081,0x0023001000000000ull); setmsr(0xc0000100, 0x5550000);
  { struct kvm_fpu f; ioctl(vcpu,KVM_GET_FPU,&f); memset(f.xmm[1],0x5a,16); f.fcw=0x27f; ioctl(vcpu,KVM_SET_FPU,&f); }
  setcpl3(0x10010,0); int x=go();
  { struct kvm_fpu f; ioctl(vcpu,KVM_GET_FPU,&f); struct kvm_sregs s; ioctl(vcpu,KVM_GET_SREGS,&s); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r);
    printf("after %s: KERNEL_GS=%#llx STAR=%#llx FS_BASE=%#llx xmm1[0]=%#x fcw=%#x cr3=%#llx cs=%#x rip=%#llx rcx=%#llx r11=%#llx\n", en(x),
     (unsigned long long)getmsr(0xc0000102),(unsigned long long)getmsr(0xc0000081),(unsigned long long)getmsr(0xc0000100), f.xmm[1][0], f.fcw, (unsigned long long)s.cr3, s.cs.selector,(unsigned long long)r.rip,(unsigned long long)r.rcx,(unsigned long long)r.r11);
    struct kvm_vcpu_events ev; ioctl(vcpu,KVM_GET_VCPU_EVENTS,&ev); printf("  events: exc inj=%d pend=%d nr=%d, triple_fault pending? flags=%#x\n", ev.exception.injected, ev.exception.pending, ev.exception.nr, ev.flags);
    // run on without resetting state
    struct kvm_regs r2=r; r2.rip=0x10000; ioctl(vcpu,KVM_SET_REGS,&r2); int y=go(); printf("  re-run after shutdown with only SET_REGS: %s\n", en(y));
  }
  // SHUTDOWN round trip setting only regs (state kept from before)
  { N=2000; int bad=0; setcpl3(0x10020,0); t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r={.rip=0x10020,.rflags=0x202,.rsp=0x80000}; ioctl(vcpu,KVM_SET_REGS,&r); int x=go(); if(x!=KVM_EXIT_SHUTDOWN) bad++; } printf("T2b #PF SHUTDOWN round trip (SET_REGS only): %.1f us (%d unexpected)\n",(now()-t0)/N*1e6,bad); }
  { N=2000; int bad=0; setcpl3(0x10010,0); t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r={.rip=0x10010,.rflags=0x202,.rsp=0x80000}; ioctl(vcpu,KVM_SET_REGS,&r); int x=go(); if(x!=KVM_EXIT_SHUTDOWN) bad++; } printf("T2c syscall SHUTDOWN round trip (SET_REGS only): %.1f us (%d unexpected)\n",(now()-t0)/N*1e6,bad); }
  { N=2000; int bad=0; setcpl3(0x100c0,0); t0=now(); for(int i=0;i<N;i++){ struct kvm_regs r={.rip=0x100c0,.rflags=0x202,.rsp=0x80000}; ioctl(vcpu,KVM_SET_REGS,&r); int x=go(); if(x!=KVM_EXIT_SHUTDOWN) bad++; } printf("T2d int3 SHUTDOWN round trip (SET_REGS only): %.1f us (%d unexpected)\n",(now()-t0)/N*1e6,bad); }

  // T3: CPUID at CPL3
  setcpl3(0x10030,0); x=go(); { struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); char v[13]; memcpy(v,&r.rbx,4); memcpy(v+4,&r.rdx,4); memcpy(v+8,&r.rcx,4); v[12]=0; printf("T3 CPUID leaf 0 at CPL3: exit %s vendor '%s'\n", en(x), v); }
  printf("   set MISC_FEATURES_ENABLES(0x140)=1: %d; PLATFORM_INFO(0xce)=%#llx\n", setmsr(0x140,1), (unsigned long long)getmsr(0xce));
  setcpl3(0x10030,0); x=go(); { struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); printf("   with CPUID faulting: exit %s rip=%#llx\n", en(x), (unsigned long long)r.rip); }
  setmsr(0x140,0);

  // T4: RDTSC at CPL3
  setcpl3(0x10040,0); setmsr(0x10, 1000000); x=go(); { struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); uint64_t t=(r.rdx<<32)|(uint32_t)r.rax; printf("T4 RDTSC at CPL3 after TSC:=1e6: exit %s tsc=%llu, GET_MSRS(TSC)=%llu, TSC_KHZ=%d\n", en(x), (unsigned long long)t, (unsigned long long)getmsr(0x10), ioctl(vcpu,KVM_GET_TSC_KHZ,0)); }
  { uint64_t a=getmsr(0x10); double t=now(); usleep(100000); uint64_t b=getmsr(0x10); printf("   guest TSC rate via GET_MSRS: %.0f MHz\n", (b-a)/(now()-t)/1e6); }
  printf("   KVM_SET_TSC_KHZ(1000000): %d (errno %d)\n", ioctl(vcpu,KVM_SET_TSC_KHZ,1000000), errno);
  setcpl3(0x10040,0); x=go(); { uint64_t a=getmsr(0x10); double t=now(); usleep(100000); uint64_t b=getmsr(0x10); printf("   after SET_TSC_KHZ: rate %.0f MHz\n", (b-a)/(now()-t)/1e6); }
  setcpl3(0x10040,4 /*TSD*/); x=go(); { struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); printf("   with CR4.TSD: exit %s rip=%#llx\n", en(x), (unsigned long long)r.rip); }

  // T5: kick cost with a per-thread timer (SIGUSR1) every 1 ms vs uninterrupted
  {
    timer_t tm; struct sigevent sev={0}; sev.sigev_notify=SIGEV_THREAD_ID; sev.sigev_signo=SIGUSR1; sev._sigev_un._tid=syscall(SYS_gettid);
    timer_create(CLOCK_MONOTONIC,&sev,&tm);
    for(int variant=0; variant<3; variant++){
      setcpl3(0x10050,0); struct kvm_regs r; ioctl(vcpu,KVM_GET_REGS,&r); r.rax=0; ioctl(vcpu,KVM_SET_REGS,&r);
      struct itimerspec its={{0,variant?1000000:0},{0,variant?1000000:0}}; if(!variant) its.it_value.tv_sec=5; timer_settime(tm,0,&its,NULL);
      double t0=now(); long kicks=0;
      while(now()-t0<1.0){ int rc=ioctl(vcpu,KVM_RUN,0); if(rc<0&&errno==EINTR){ kicks++; if(variant==2){ struct kvm_regs q; struct kvm_sregs ss; struct kvm_fpu f; ioctl(vcpu,KVM_GET_REGS,&q); ioctl(vcpu,KVM_GET_SREGS,&ss); ioctl(vcpu,KVM_GET_FPU,&f); ioctl(vcpu,KVM_SET_FPU,&f); ioctl(vcpu,KVM_SET_SREGS,&ss); ioctl(vcpu,KVM_SET_REGS,&q);} continue;} break; }
      struct itimerspec off={0}; timer_settime(tm,0,&off,NULL);
      ioctl(vcpu,KVM_GET_REGS,&r);
      printf("T5 native inc loop %s: %.0f M iter/s, %ld kicks\n", variant==0?"uninterrupted":variant==1?"1 ms timer kick":"1 ms kick + get/set regs,sregs,fpu", r.rax/1e6/(now()-t0), kicks);
    }
  }

  // T6: page-table coherence
  uint64_t *ptp=pt; // pt index for VA 0x300000 = 0x300
  *(uint64_t*)(mem+0x300000)=0xAAAA; *(uint64_t*)(mem+0x301000)=0xBBBB; *(uint64_t*)(mem+0x302000)=0xCCCC;
  #define READ300(expect,label) do{ setcpl3(0x10060,0); int xx=go(); uint64_t v=getrax(); printf("  %-60s exit %s rax=%#llx %s\n", label, en(xx), (unsigned long long)v, v==(expect)?"ok":"STALE"); }while(0)
  printf("T6 page-table coherence (VA 0x300000)\n");
  READ300(0xAAAA,"initial");
  ptp[0x300]=0x301000|7; slot_readd(&DUMMY); READ300(0xBBBB,"PTE->0x301000, delete+re-add an unrelated 4 KiB slot");
  ptp[0x300]=0x302000|7; mprotect(mem+0x301000,4096,PROT_READ); mprotect(mem+0x301000,4096,PROT_READ|PROT_WRITE); READ300(0xCCCC,"PTE->0x302000, mprotect R/RW of the old target's host page");
  ptp[0x300]=0x300000|7; madvise(mem+0x302000,4096,MADV_COLD); READ300(0xAAAA,"PTE->0x300000, MADV_COLD old target (no zap expected)");
  ptp[0x300]=0x301000|7; mprotect(mem+0x100000,4096,PROT_READ); mprotect(mem+0x100000,4096,PROT_READ|PROT_WRITE); READ300(0xBBBB,"PTE->0x301000, mprotect R/RW of the PT page itself");
  ptp[0x300]=0x302000|7; slot_readd(&RG); READ300(0xCCCC,"PTE->0x302000, delete+re-add the RAM slot");
  // write-protect (permission) change: make the page read-only, then write from user -> expect #PF shutdown
  code(0x10090-0x10+0x100,"",0);
  // upper-level change: pd[2] (VA 0x400000..) to a new PT page at 0x108000 whose entry 0 maps 0x301000
  uint64_t *pd2=(uint64_t*)(mem+0x108000); for(int i=0;i<512;i++) pd2[i]=(0x400000+(uint64_t)i*0x1000)|7; pd2[0]=0x301000|7;
  *(uint64_t*)(mem+0x400000)=0x4444;
  { setcpl3(0x10070,0); go(); printf("  VA 0x400000 initial: %#llx\n",(unsigned long long)getrax()); }
  pd[2]=0x108000|7; mprotect(mem+0x400000,4096,PROT_READ); mprotect(mem+0x400000,4096,PROT_READ|PROT_WRITE);
  { setcpl3(0x10070,0); go(); uint64_t v=getrax(); printf("  %-60s rax=%#llx %s\n","PDE->new PT page; mprotect old leaf target (0x400000)",(unsigned long long)v, v==0xBBBB?"ok":"STALE"); }
  pd[2]=0x102000|7; slot_readd(&DUMMY);
  { setcpl3(0x10070,0); go(); uint64_t v=getrax(); printf("  %-60s rax=%#llx %s\n","PDE back; dummy slot re-add",(unsigned long long)v, v==0x4444?"ok":"STALE"); }

  // costs
  N=500; t0=now(); for(int i=0;i<N;i++) slot_readd(&DUMMY); printf("T7 dummy 4 KiB slot delete+re-add: %.1f us\n",(now()-t0)/N*1e6);
  N=200; t0=now(); for(int i=0;i<N;i++) slot_readd(&RG); printf("   16 MiB RAM slot delete+re-add: %.1f us\n",(now()-t0)/N*1e6);
  N=2000; t0=now(); for(int i=0;i<N;i++){ mprotect(mem+0x301000,4096,PROT_READ); mprotect(mem+0x301000,4096,PROT_READ|PROT_WRITE);} printf("   mprotect R + RW of one page: %.1f us\n",(now()-t0)/N*1e6);
  // rebuild cost: touch 1024 pages
  for(int k=0;k<4;k++){ setcpl3(0x10080,0); t0=now(); go(); double a=now()-t0; printf("   touch 1024 pages natively (pass %d): %.0f us\n",k,a*1e6); }
  slot_readd(&DUMMY); setcpl3(0x10080,0); t0=now(); go(); printf("   touch 1024 pages after dummy-slot zap: %.0f us\n",(now()-t0)*1e6);
  setcpl3(0x10080,0); t0=now(); go(); printf("   again: %.0f us\n",(now()-t0)*1e6);
  mprotect(mem+0x800000,4<<20,PROT_READ); mprotect(mem+0x800000,4<<20,PROT_READ|PROT_WRITE); setcpl3(0x10080,0); t0=now(); go(); printf("   touch 1024 pages after mprotect of those 4 MiB: %.0f us\n",(now()-t0)*1e6);
  (void)only;
  return 0;
}
