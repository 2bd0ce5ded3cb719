// Probe: what it costs to make kvm-pvm drop its shadow page tables (so that page tables written
// through the host mapping are seen again): deleting and re-creating a memory slot, per slot kind.
// Build: gcc -O2 -Wall hybrid-zap.c -o /tmp/hybrid-zap && /tmp/hybrid-zap
#define _GNU_SOURCE
#include <stdio.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <sys/mman.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int vm;
static double cmp(const void*a,const void*b){return 0;}
static int dcmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static void readd(struct kvm_userspace_memory_region *r){ struct kvm_userspace_memory_region z=*r; z.memory_size=0; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&z); ioctl(vm,KVM_SET_USER_MEMORY_REGION,r); }
static void measure(const char *name, struct kvm_userspace_memory_region *r, int n){
  double *t=malloc(n*sizeof(double));
  for(int i=0;i<n;i++){ double t0=now(); readd(r); t[i]=(now()-t0)*1e6; }
  qsort(t,n,sizeof(double),dcmp);
  printf("%-52s median %8.1f us  p10 %8.1f  p90 %8.1f\n", name, t[n/2], t[n/10], t[n*9/10]);
  free(t);
}
int main(void){
  setvbuf(stdout,NULL,_IONBF,0);
  (void)cmp;
  int kvm=open("/dev/kvm",O_RDWR); vm=ioctl(kvm,KVM_CREATE_VM,0);
  size_t big=512u<<20;
  uint8_t *mem=mmap(NULL,big,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);
  struct kvm_userspace_memory_region ram={.slot=0,.guest_phys_addr=0,.memory_size=big,.userspace_addr=(uint64_t)mem};
  ioctl(vm,KVM_SET_USER_MEMORY_REGION,&ram);
  uint8_t *pg=mmap(NULL,4096,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  struct kvm_userspace_memory_region d1={.slot=1,.guest_phys_addr=0xFFFB0000,.memory_size=4096,.userspace_addr=(uint64_t)pg};
  struct kvm_userspace_memory_region d2={.slot=2,.guest_phys_addr=0x100000000ull,.memory_size=4096,.userspace_addr=(uint64_t)pg};
  ioctl(vm,KVM_SET_USER_MEMORY_REGION,&d1); ioctl(vm,KVM_SET_USER_MEMORY_REGION,&d2);
  int n=40;
  measure("4 KiB slot at 0xFFFB0000", &d1, n);
  measure("4 KiB slot at 4 GiB", &d2, n);
  measure("512 MiB RAM slot", &ram, n);
  ram.flags=KVM_MEM_LOG_DIRTY_PAGES; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&ram);
  measure("512 MiB RAM slot, dirty logging", &ram, n);
  measure("4 KiB slot at 0xFFFB0000 (again)", &d1, n);
  // bare syscall cost for reference: KVM_CHECK_EXTENSION
  double t0=now(); for(int i=0;i<10000;i++) ioctl(vm,KVM_CHECK_EXTENSION,KVM_CAP_USER_MEMORY); printf("ioctl KVM_CHECK_EXTENSION: %.2f us\n",(now()-t0)/10000*1e6);
  return 0;
}
