; qemu-reset-bios.asm — a 64 KiB stand-in BIOS so QEMU can run the flat test guests as a second
; opinion (scripts/build-guests --check): the reset vector jumps to 0000:1000 in real mode, where
; `-device loader,file=<guest>.bin,addr=0x1000,force-raw=on` put the guest. Not used by swhv itself.
; Every guest sets its own SS:SP and data segments, so only CS:IP matters here.
bits 16
org 0
times 0xFFF0 - ($ - $$) db 0xF4     ; hlt
    jmp 0x0000:0x1000
times 0x10000 - ($ - $$) db 0xF4
