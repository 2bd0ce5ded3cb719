; rtc.asm — the CMOS RTC's periodic interrupt (IRQ 8) through the 8259 pair, in real mode.
;
; Load:   flat binary at guest-physical 0x1000. Entry: real mode, CS=0 IP=0x1000, SP=0x8000.
; Needs:  the 8259 pair and the RTC of the platform, with interrupts delivered (the interpreter, or
;         KVM with its in-kernel irqchip: the RTC is swhv's on both, KVM has none in the kernel).
; Does:   remaps the PICs (master 0x20, slave 0x28), unmasks only IRQ 2 (cascade) and IRQ 8, sets the
;         RTC's periodic rate to 64 Hz (register A rate 10), clears register C, sets PIE in register B, waits in
;         `sti; hlt` for 8 interrupts. The handler reads register C (which must show PF and IRQF,
;         and acknowledges the interrupt) and sends EOI to both PICs.
; Output: "rtc periodic ok\n"; "rtc FAIL <letter>\n" on a wrong flag (A) or a missing ack (B).
;         A lost interrupt leaves the guest halted with interrupts on: the harness watchdog ends it.
; Stop:   0xFE to port 0x64 -> "reset".

bits 16
org 0x1000

COM1     equ 0x3F8
WANTED   equ 8
VECTOR   equ 0x28                   ; slave IR0 = IRQ 8

start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x8000
    mov word [VECTOR*4], rtc_handler
    mov word [VECTOR*4+2], 0

    ; ICW1-4 for both chips: edge triggered, cascade, 8086 mode.
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 0x20                    ; master vectors 0x20-0x27
    out 0x21, al
    mov al, 0x28                    ; slave vectors 0x28-0x2F
    out 0xA1, al
    mov al, 0x04                    ; slave on master IR2
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01
    out 0x21, al
    out 0xA1, al
    mov al, 0xFB                    ; master: only IR2
    out 0x21, al
    mov al, 0xFE                    ; slave: only IR0 (IRQ 8)
    out 0xA1, al

    ; RTC: 32.768 kHz time base, rate 10 (64 Hz). Then clear the flags that piled up (PF is set at
    ; every period whether PIE is on or not: enabling PIE with PF pending interrupts at once), and
    ; only then turn on PIE (with 24-hour BCD).
    mov al, 0x0A
    out 0x70, al
    mov al, 0x2A
    out 0x71, al
    mov al, 0x0C
    out 0x70, al
    in al, 0x71
    mov al, 0x0B
    out 0x70, al
    mov al, 0x42
    out 0x71, al

.wait:
    sti
    hlt
    cli
    cmp word [count], WANTED
    jb .wait

    cmp byte [bad_flags], 0
    mov al, 'A'
    jne fail

    ; PIE off; a read of register C now must show no pending interrupt.
    mov al, 0x0B
    out 0x70, al
    mov al, 0x02
    out 0x71, al
    mov al, 0x0C
    out 0x70, al
    in al, 0x71
    in al, 0x71                     ; (the first read acknowledged anything that raced in)
    test al, 0x80
    mov al, 'B'
    jnz fail
    mov si, msg_ok
    jmp finish

rtc_handler:
    push ax
    mov al, 0x0C
    out 0x70, al
    in al, 0x71
    and al, 0xC0
    cmp al, 0xC0                    ; IRQF | PF
    je .ok
    mov byte [bad_flags], 1
.ok:
    inc word [count]
    mov al, 0x20                    ; EOI: slave, then master
    out 0xA0, al
    out 0x20, al
    pop ax
    iret

fail:                               ; AL = failing check letter
    mov [fail_letter], al
    mov si, msg_fail
finish:                             ; prints DS:SI, then pulses the reset line through the i8042
    call puts
    mov al, 0xFE
    out 0x64, al
    cli
    hlt

puts:
    lodsb
    test al, al
    jz .done
    mov dx, COM1
    out dx, al
    jmp puts
.done:
    ret

count:       dw 0
bad_flags:   db 0
msg_ok:      db "rtc periodic ok", 10, 0
msg_fail:    db "rtc FAIL "
fail_letter: db "?", 10, 0
