// cflags: -O2
// The CMOS RTC's interrupt (IRQ 8) through /dev/rtc0. Linux emulates periodic interrupts with an
// hrtimer and update interrupts with the alarm, so both update-ended reads and the one-shot alarm
// below need the hardware alarm interrupt to reach the guest. Each wait gives up after 5 seconds.
#include <fcntl.h>
#include <linux/rtc.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

/// One RTC event: its flags byte (RTC_AF/RTC_UF/RTC_PF), or -1 when none came within 5 s.
static int wait_event(int fd) {
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    struct timeval tv = {5, 0};
    if (select(fd + 1, &set, NULL, NULL, &tv) != 1) return -1;
    unsigned long data;
    if (read(fd, &data, sizeof data) != sizeof data) return -1;
    return (int)(data & 0xF0);
}

int main(void) {
    int fd = open("/dev/rtc0", O_RDONLY);
    if (fd < 0) { perror("open /dev/rtc0"); return 1; }

    // Update-ended interrupts: three, one per second.
    if (ioctl(fd, RTC_UIE_ON, 0) < 0) { perror("RTC_UIE_ON"); return 1; }
    int updates = 0;
    for (int i = 0; i < 3; i++) if (wait_event(fd) & RTC_UF) updates++;
    ioctl(fd, RTC_UIE_OFF, 0);
    printf("update interrupts: %d of 3\n", updates);

    // A one-shot alarm two seconds ahead.
    struct rtc_time tm;
    if (ioctl(fd, RTC_RD_TIME, &tm) < 0) { perror("RTC_RD_TIME"); return 1; }
    struct tm t = {.tm_sec = tm.tm_sec, .tm_min = tm.tm_min, .tm_hour = tm.tm_hour, .tm_mday = tm.tm_mday,
                   .tm_mon = tm.tm_mon, .tm_year = tm.tm_year};
    time_t when = timegm(&t) + 2;
    gmtime_r(&when, &t);
    struct rtc_time alarm = {.tm_sec = t.tm_sec, .tm_min = t.tm_min, .tm_hour = t.tm_hour,
                             .tm_mday = t.tm_mday, .tm_mon = t.tm_mon, .tm_year = t.tm_year,
                             .tm_wday = -1, .tm_yday = -1, .tm_isdst = -1};
    if (ioctl(fd, RTC_ALM_SET, &alarm) < 0) { perror("RTC_ALM_SET"); return 1; }
    if (ioctl(fd, RTC_AIE_ON, 0) < 0) { perror("RTC_AIE_ON"); return 1; }
    int flags = wait_event(fd);
    ioctl(fd, RTC_AIE_OFF, 0);
    printf("alarm: %s\n", flags < 0 ? "no interrupt" : (flags & RTC_AF) ? "fired" : "wrong event");
    close(fd);
    return updates == 3 && flags >= 0 && (flags & RTC_AF) ? 0 : 1;
}
