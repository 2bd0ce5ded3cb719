; Seed for the translator fuzz target (scripts/fuzz-seeds assembles it): a loop over a mix of
; ALU forms of every size, shifts, rotates, memory operands, push/pop, call/ret, setcc/cmov, lea,
; extensions and imul, so the corpus replays thousands of translated instructions.
bits 64
mov r14d, 3
top:
mov rbp, 0x70000
push rcx
pop r8
adc r10, rbx
sbb eax, ebx
lea rbx, [rdx+rbx*8+-440]
add eax, r8d
shl r11, cl
and r8d, 70740
and si, di
test edi, ebx
cmp r11, rdx
lea rdi, [r9+r11*8+-130]
mov rdx, [rbp+184]
shl rbx, cl
imul rdi, r9, -411
and r10, r8
push rcx
pop r9
lea rax, [rbx+r10*4+-152]
setg bl
cmovg r11, r9
sub rsi, r9
cmp di, si
mov r8, [rbp+352]
add al, dl
rcr rbx, 8
rol rsi, cl
imul rbx, rcx, -81
test al, 1
jz Z24
inc r15
Z24:
neg esi
lea r10, [rsi+r8*4+199]
dec esi
or ecx, edx
and cl, al
lea r10, [rdi+r11*4+475]
add si, -12
not rsi
inc r9
inc r8d
sub r9d, ecx
push r11
pop rax
test r11, rcx
sub si, ax
ror rsi, 9
call F39
jmp L39
F39: add rax, 3
ret
L39:
xor dword [rbp+480], 125
cmp dil, dil
mov rbx, [rbp+144]
cmp di, cx
or ax, 115
setc dl
cmovc r10, rax
mov rbx, [rbp+264]
setc bl
cmovc rdx, r10
push rdx
pop r11
rcr r9d, 25
test al, 1
jz Z49
inc r15
Z49:
shr r10, cl
imul rdi, rax, -943
sub dword [rbp+192], 709
setge dl
cmovge rdi, rdi
cmp ebx, edx
sar r8d, 30
or al, dl
imul rcx, r8, 616
push rbx
pop r8
movsx ebx, bl
and rax, 77310
movzx r9d, cx
and si, -123
sbb r10, rcx
rcr r8d, 1
add dword [rbp+240], 782
push rsi
pop r10
lea rcx, [rax+rdi*8+178]
lea r10, [rcx+r10*2+36]
and cl, al
sub r9, 72810
test di, si
imul rbx, r10, -884
shr rax, cl
test r10, r9
test al, 1
jz Z74
inc r15
Z74:
test r9, rdi
rcl rax, 28
imul r10, rdx, 431
add dword [rbp+136], 426
sbb al, bl
call F79
jmp L79
F79: add rax, 3
ret
L79:
and esi, ebx
setc bl
cmovc rcx, r9
shl rsi, cl
imul rcx, rdx, -670
lea r10, [r8+rdi*8+-300]
setns al
cmovns rdi, rax
push r10
pop r9
movzx r8d, cx
mov r10, [rbp+64]
xor ebx, ebx
mov qword [rbp+272], 773
sbb esi, 19449
imul rdi, rbx, -429
xor r8d, ebx
or rsi, rbx
add ax, dx
push r10
pop r8
add qword [rbp+240], 960
and esi, eax
sar rbx, 33
test al, 1
jz Z99
inc r15
Z99:
sar r8, 32
add edi, 32698
test rax, r10
ror r9, 15
movzx r8d, dx
neg si
shr rcx, 12
add edi, 16887
and rsi, r8
xor r8, r10
sar ebx, cl
movzx ecx, cx
movzx esi, cx
push r10
pop rdi
shl rbx, cl
sar edi, 0
push r8
pop rbx
imul rsi, r10, 343
shr r10, 0
sbb ax, bx
call F119
jmp L119
F119: add rax, 3
ret
L119:
sub cl, bl
sbb di, 67
push r9
pop rcx
mov r11, [rbp+144]
test r8b, cl
test al, 1
jz Z124
inc r15
Z124:
add ebx, eax
sub cx, -32
movzx eax, bl
imul rsi, rax, -65
cmp r10, rbx
mov dword [rbp+240], 746
shr r8, 31
inc r9
mov rax, [rbp+200]
xor edi, esi
add r9, 63546
mov qword [rbp+496], 297
mov r9, [rbp+472]
movzx edx, cx
test dl, al
movsx r8d, bl
shl ecx, 9
xor qword [rbp+280], 908
cmp bx, dx
inc edi
xor dil, sil
sbb edi, 41300
adc ax, cx
inc r8d
sub cx, cx
test al, 1
jz Z149
inc r15
Z149:
not ax
add dx, cx
mov qword [rbp+288], 650
sbb rsi, 66844
push rdx
pop rdi
lea rax, [r8+r10*2+236]
and r8, r9
mov r9, [rbp+48]
sbb r9, 44916
mov rsi, [rbp+256]
call F159
jmp L159
F159: add rax, 3
ret
L159:
sub qword [rbp+304], 494
inc edi
test rdx, 65024
rol rcx, cl
movsx ecx, bl
shl edi, cl
push r10
pop rbx
push rdx
pop rdi
add qword [rbp+416], 392
lea r10, [rdx+r8*4+-154]
sub bl, bl
add dword [rbp+408], 661
movsx esi, al
cmp r8, 76834
imul rax, rbx, -199
test al, 1
jz Z174
inc r15
Z174:
movsx edx, al
shr esi, cl
add bl, r8b
xor edx, eax
test cx, 34
lea rbx, [rbx+rbx*4+37]
rol rax, 14
cmp r10, rsi
xor qword [rbp+480], 538
ror r9d, cl
cmp al, bl
lea rbx, [rsi+rdx*8+447]
setnc bl
cmovnc rax, rdi
lea rdi, [r8+rdx*1+316]
mov r10, [rbp+64]
rol r8d, 19
shr r8, 14
xor qword [rbp+504], 624
sbb r9, 87073
or r8d, eax
add r8d, eax
adc r9d, 95911
or rcx, rdi
cmp si, -120
mov r8, [rbp+376]
call F199
jmp L199
F199: add rax, 3
ret
L199:
test al, 1
jz Z199
inc r15
Z199:
push r9
pop rcx
sub rbx, rsi
setl al
cmovl r10, rdx
neg rbx
lea rbx, [rax+r9*2+-119]
movzx edi, cx
imul rax, r8, -493
inc rsi
xor bl, al
rcl ecx, 38
push rdi
pop rsi
push r11
pop rax
xor dword [rbp+304], 3
cmp rdx, rbx
movsx esi, dx
imul rcx, r9, -626
or di, bx
push rdi
pop r9
seto dl
cmovo rbx, r10
rol edi, 15
lea rbx, [rax+r9*4+-336]
lea rbx, [rbx+rsi*1+-287]
and dil, dil
shr rdi, cl
movzx ebx, cx
test al, 1
jz Z224
inc r15
Z224:
mov rsi, [rbp+272]
sets dl
cmovs rsi, rdx
movzx ecx, bl
shr rbx, cl
sar ecx, 25
add qword [rbp+96], 669
movzx ebx, al
imul rdx, r9, 872
setz bl
cmovz rdx, rbx
adc edx, ebx
add esi, 13736
setnc al
cmovnc rdi, rdi
xor rdx, 4883
rcr eax, 20
lea rdi, [rcx+r11*4+-421]
call F239
jmp L239
F239: add rax, 3
ret
L239:
shl r9, 35
imul rbx, r8, -793
dec cx
sbb r8d, esi
mov rsi, [rbp+424]
adc di, si
lea r8, [rax+rdi*2+-100]
dec eax
lea rcx, [r8+rbx*1+-85]
setge al
cmovge rcx, rax
test al, 1
jz Z249
inc r15
Z249:
adc r8d, ebx
xor rdi, 21081
sbb rbx, 64164
sar esi, 2
imul rdi, rax, 244
inc si
sbb bx, 29
rcr r9, 11
shl rsi, 33
sub edi, 19462
dec r14
jnz top
; SSE: moves of every form, integer and bitwise operations on registers and aligned memory
sse_section:
mov rbp, 0x70000
movq xmm14, rcx
movd xmm14, r8d
movq r9, xmm15
movd ecx, xmm5
pmovmskb ebx, xmm15
punpckldq xmm1, xmm12
pshufd xmm0, xmm2, 18
pshufd xmm2, [rbp+16], 97
pmuludq xmm0, [rbp+160]
pshufd xmm6, xmm7, 255
pshufd xmm7, [rbp+144], 2
andps xmm14, xmm8
psubusw xmm8, xmm10
movdqu xmm0, [rbp+48]
movdqa [rbp+144], xmm2
movss xmm2, xmm0
pmaxsw xmm1, [rbp+192]
movdqa xmm2, xmm6
pavgb xmm9, xmm10
pxor xmm4, xmm7
andps xmm14, xmm15
pavgb xmm14, [rbp+64]
movss xmm3, xmm12
punpckhqdq xmm8, xmm9
punpcklwd xmm12, xmm3
psubq xmm14, [rbp+0]
movdqa xmm12, [rbp+32]
movaps [rbp+112], xmm2
punpcklbw xmm11, xmm11
pshufd xmm15, xmm4, 93
pshufd xmm4, [rbp+192], 78
movaps xmm7, [rbp+96]
movaps [rbp+192], xmm7
movq xmm2, rbx
movd xmm13, eax
paddb xmm8, xmm7
movsd xmm15, xmm9
paddw xmm7, xmm15
paddw xmm6, [rbp+32]
movsd xmm14, xmm7
pcmpeqw xmm9, xmm11
movq xmm4, [rbp+168]
movq [rbp+168], xmm14
movq r9, xmm4
movd ecx, xmm1
pmovmskb edi, xmm4
movdqu xmm1, [rbp+32]
movdqa [rbp+144], xmm0
movss xmm4, [rbp+40]
movss [rbp+40], xmm2
pcmpeqw xmm4, xmm10
movq xmm2, r9
movd xmm13, esi
pcmpeqb xmm12, xmm12
pavgb xmm2, xmm3
movss xmm12, [rbp+232]
movsd [rbp+232], xmm14
movq r9, xmm0
movd eax, xmm9
pmovmskb ebx, xmm0
pxor xmm15, xmm15
movq xmm9, [rbp+96]
movss [rbp+104], xmm4
movq xmm15, r8
movd xmm7, edi
movaps xmm6, [rbp+96]
movdqu [rbp+112], xmm13
pshufd xmm10, xmm6, 68
pshufd xmm6, [rbp+64], 254
movsd xmm1, [rbp+128]
movss [rbp+136], xmm2
movq xmm8, r8
movd xmm6, edi
movq rdi, xmm15
movd eax, xmm10
pmovmskb r8d, xmm15
andnpd xmm8, xmm1
movss xmm9, [rbp+68]
movsd [rbp+72], xmm0
pandn xmm8, xmm7
pcmpeqb xmm14, xmm3
punpcklqdq xmm6, [rbp+128]
packsswb xmm15, xmm1
movaps xmm11, [rbp+192]
movdqa [rbp+208], xmm5
movss xmm4, xmm14
psubb xmm12, xmm10
packuswb xmm3, [rbp+96]
movdqa xmm2, xmm9
pmuludq xmm11, xmm2
movsd xmm13, [rbp+240]
movsd [rbp+248], xmm8
movss xmm1, xmm5
movq xmm4, rbx
movd xmm14, r8d
xorps xmm14, [rbp+80]
movq rdx, xmm8
movd ecx, xmm9
pmovmskb r8d, xmm8
pavgb xmm8, xmm15
movq rax, xmm3
movd esi, xmm0
pmovmskb eax, xmm3
movq rbx, xmm12
movd edi, xmm3
pmovmskb ebx, xmm12
paddw xmm14, xmm13
psubq xmm15, [rbp+64]
movss xmm15, xmm10
movsd xmm0, xmm8
pxor xmm6, xmm4
movups xmm10, [rbp+112]
movdqu [rbp+48], xmm11
movq xmm3, r8
movd xmm8, eax
movss xmm13, xmm5
movq rdi, xmm6
movd ebx, xmm4
pmovmskb ecx, xmm6
pshufd xmm10, xmm6, 99
pshufd xmm6, [rbp+96], 49
paddb xmm7, xmm4
movss xmm3, xmm13
punpckhbw xmm12, [rbp+48]
pshufd xmm11, xmm11, 175
pshufd xmm11, [rbp+48], 96
pand xmm15, xmm3
movq rcx, xmm15
movd eax, xmm4
pmovmskb ebx, xmm15
orps xmm5, xmm9
pcmpeqd xmm4, xmm14
movq xmm12, [rbp+212]
movss [rbp+216], xmm14
punpckhbw xmm11, [rbp+16]
pmaxub xmm13, xmm14
movsd xmm6, xmm5
movq xmm2, [rbp+104]
movss [rbp+104], xmm12
movdqu xmm8, [rbp+80]
movaps [rbp+160], xmm3
movq r8, xmm11
movd ebx, xmm13
pmovmskb edi, xmm11
psadbw xmm2, xmm10
packsswb xmm0, xmm11
movdqu xmm9, [rbp+96]
movaps [rbp+32], xmm10
movaps xmm15, xmm6
pshufd xmm0, xmm3, 121
pshufd xmm3, [rbp+48], 131
movq xmm12, r8
movd xmm1, eax
psubq xmm8, xmm8
movq rbx, xmm13
movd esi, xmm3
pmovmskb esi, xmm13
psadbw xmm12, xmm5
paddusb xmm15, xmm1
movdqa xmm9, xmm12
movq rsi, xmm9
movd edi, xmm15
pmovmskb edi, xmm9
movups xmm0, [rbp+112]
movdqa [rbp+80], xmm0
movaps xmm12, xmm1
pmullw xmm10, xmm2
movq xmm8, rbx
movd xmm7, r8d
movq xmm4, rax
movd xmm7, esi
movsd xmm14, xmm3
movss xmm4, [rbp+176]
movq [rbp+184], xmm3
movdqa xmm14, xmm8
movq rdx, xmm4
movd edx, xmm9
pmovmskb eax, xmm4
movq rsi, xmm9
movd esi, xmm11
pmovmskb edi, xmm9
pshufd xmm6, xmm8, 97
pshufd xmm8, [rbp+112], 127
movq rax, xmm6
movd ecx, xmm1
pmovmskb ecx, xmm6
movss xmm0, xmm1
movq rcx, xmm8
movd esi, xmm2
pmovmskb ebx, xmm8
; Sign extensions and bit scans (zero and non-zero sources, every size)
cbw
cwde
cdqe
cwd
cdq
cqo
bsf rax, rbx
bsr ecx, edx
bsf si, di
mov r9, 0
bsf r10, r9
bsr r11d, r9d
bsr rax, [rbp+16]
bsf edx, [rbp+24]
mul rbx
imul ecx
mul word [rbp+8]
imul byte [rbp+3]
mov rax, -5
imul qword [rbp+16]
mul r9
movups xmm3, [rbp+3]
movdqu [rbp+0xff9], xmm4
movdqa xmm5, [rbp+8]
hlt
