import XCTest
import VMMemory
import VMCore
@testable import Devices

/// virtio-net as its driver and the host see it: features and config space, frames both ways byte
/// for byte, merged receive buffers, backpressure, the link, and hostile guests and hosts.
final class VirtioNetTests: XCTestCase {
    typealias F = VirtioNet.Feature

    // MARK: Features and configuration

    func testOffersMACStatusMergeableBuffersAndTheHostsOffloads() throws {
        let all = try NetRig().offered
        for f in [F.mac, F.status, F.mrgRxbuf, F.csum, F.guestCsum, F.hostTSO4, F.hostTSO6, F.hostECN, F.hostUFO,
                  F.guestTSO4, F.guestTSO6, F.guestECN, F.guestUFO, VirtioFeature.version1] {
            XCTAssertNotEqual(all & f, 0, "feature \(f) offered")
        }
        let csum = try NetRig(offloads: .checksum).offered
        XCTAssertEqual(csum & (F.csum | F.guestCsum), F.csum | F.guestCsum)
        XCTAssertEqual(csum & (F.hostTSO4 | F.guestTSO4 | F.hostUFO | F.guestUFO), 0, "offload=csum: no segmentation")
        let none = try NetRig(offloads: .none, mergeable: false).offered
        XCTAssertEqual(none & (F.csum | F.guestCsum | F.mrgRxbuf | F.hostTSO4 | F.guestTSO4), 0)
        XCTAssertNotEqual(none & F.mac, 0)

        // A host whose TAP cannot deliver TSO6 frames: the guest is not promised them.
        let limited = FakeNetBackend()
        limited.receiveOffloads = [.checksum, .tso4]
        let l = try NetRig(backend: limited).offered
        XCTAssertNotEqual(l & F.guestTSO4, 0)
        XCTAssertEqual(l & (F.guestTSO6 | F.guestECN | F.guestUFO), 0)
    }

    func testConfigSpaceHoldsMACAndLinkStatus() throws {
        let rig = try NetRig(mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        // Linux reads the MAC a byte at a time.
        XCTAssertEqual((0..<6).map { UInt8(rig.config($0, size: 1)) }, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        XCTAssertEqual(rig.config(6, size: 2), 1, "VIRTIO_NET_S_LINK_UP")
        XCTAssertEqual(rig.config(8, size: 2), 1, "one queue pair")
        XCTAssertEqual(rig.config(0, size: 4), 0x1200_5452)
        rig.transport.barWrite(0, offset: VirtioPciDevice.deviceConfigOffset, size: 1, value: 0xFF)
        XCTAssertEqual(rig.config(0, size: 1), 0x52, "the MAC is read-only")
        XCTAssertEqual(try NetRig(linkUp: false).config(6, size: 2), 0)
    }

    func testActivationTellsTheHostWhatTheGuestAccepts() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp { $0 & ~(F.guestTSO6 | F.guestUFO) })
        XCTAssertEqual(rig.backend.offloadsSet.last, [.checksum, .tso4, .tsoECN])
        XCTAssertTrue(rig.bringUp { $0 & ~F.guestCsum })
        XCTAssertEqual(rig.backend.offloadsSet.last, [], "no TSO without the checksum offload")
    }

    // MARK: Transmit

    func testFrameSplitOverDescriptorsReachesTheHostByteForByte() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        let frame = Frames.header(flags: 1, csumStart: 34, csumOffset: 16) + Frames.ethernet(length: 1514, seed: 3)
        rig.tx.setUsedEvent(0)
        rig.transmit(frame, split: [12, 100])
        XCTAssertEqual(rig.backend.sent.count, 1)
        assertFrames(rig.backend.sent, [frame])
        XCTAssertEqual(rig.tx.usedIdx, 1)
        XCTAssertEqual(rig.tx.usedElement(0).length, 0, "nothing written into a transmit buffer")
        XCTAssertEqual(rig.interrupts(NetRig.txVector), 1)
        XCTAssertEqual(rig.net.statistics.transmittedFrames, 1)
        XCTAssertEqual(rig.net.statistics.transmittedBytes, 1514)
    }

    func testTSOFrameOf64KiBGoesOutWhole() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        let frame = Frames.header(flags: 1, gso: 1, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16)
            + Frames.ethernet(length: VirtioNet.maxFrameSize, seed: 9)
        rig.transmit(frame, split: [12, 4096, 4096, 4096, 4096])
        assertFrames(rig.backend.sent, [frame])
    }

    /// Each malformed chain is completed and dropped (counted), the host gets nothing from it, and
    /// the queue keeps working for the next good frame.
    func testMalformedTransmitFramesAreDroppedAndTheQueueCarriesOn() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp { $0 & ~(F.hostUFO | F.hostECN) })
        let good = Frames.header() + Frames.ethernet(length: 60)
        let bad: [(String, [UInt8])] = [
            ("empty", []),
            ("header only", Frames.header()),
            ("shorter than an Ethernet header", Frames.header() + Frames.ethernet(length: 13)),
            ("longer than 64 KiB + headers", Frames.header() + Frames.ethernet(length: VirtioNet.maxFrameSize + 1)),
            ("a flag the driver may not set", Frames.header(flags: 2) + Frames.ethernet(length: 60)),
            ("checksum offsets past the frame", Frames.header(flags: 1, csumStart: 50, csumOffset: 9) + Frames.ethernet(length: 60)),
            ("UFO not negotiated", Frames.header(flags: 1, gso: 3, gsoSize: 1400, csumStart: 34, csumOffset: 6) + Frames.ethernet(length: 3000)),
            ("ECN not negotiated", Frames.header(flags: 1, gso: 0x81, gsoSize: 1400, csumStart: 34, csumOffset: 16) + Frames.ethernet(length: 3000)),
            ("TSO without a segment size", Frames.header(flags: 1, gso: 1, csumStart: 34, csumOffset: 16) + Frames.ethernet(length: 3000)),
            ("TSO without a partial checksum", Frames.header(gso: 1, gsoSize: 1448) + Frames.ethernet(length: 3000)),
            ("an unknown GSO type", Frames.header(flags: 1, gso: 5, gsoSize: 1448, csumStart: 34, csumOffset: 16) + Frames.ethernet(length: 3000)),
        ]
        var used: UInt16 = 0
        for (i, (what, bytes)) in bad.enumerated() {
            rig.transmit(bytes, head: 0)
            used &+= 1
            XCTAssertEqual(rig.tx.usedIdx, used, "\(what): completed")
            XCTAssertEqual(rig.backend.sent.count, i, "\(what): not sent")
            XCTAssertEqual(rig.net.statistics.transmitDropped, i + 1, what)
            rig.transmit(good, head: 0)
            used &+= 1
            XCTAssertEqual(rig.backend.sent.last, good, "after \(what) the next frame goes out")
        }
        XCTAssertEqual(rig.status & VirtioStatus.needsReset.rawValue, 0)
    }

    /// A chain claiming more bytes than guest RAM holds is a malformed queue, not a frame.
    func testDescriptorLengthPastGuestRAMBreaksTheQueueWithoutSending() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.tx.setDescriptor(0, address: 0x7F_F000, length: 0x10_0000, flags: 0)
        rig.tx.publish(0)
        rig.kick(VirtioNet.transmitQueue)
        XCTAssertTrue(rig.backend.sent.isEmpty)
        XCTAssertNotEqual(rig.status & VirtioStatus.needsReset.rawValue, 0)
        XCTAssertEqual(rig.interrupts(NetRig.configVector), 1, "the driver is told")
    }

    func testHostRefusingAFrameDropsItAndRemembersWhy() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.backend.transmitError = EIO
        rig.transmit(Frames.header() + Frames.ethernet(length: 60))
        XCTAssertEqual(rig.tx.usedIdx, 1, "completed all the same")
        XCTAssertEqual(rig.net.statistics.transmitDropped, 1)
        XCTAssertEqual(rig.net.statistics.lastTransmitError, EIO)
    }

    /// A TX storm: a full ring of frames per notification, many times over. Each notification takes
    /// at most the ring; every frame goes out in order.
    func testTransmitStormOfFullRingsSendsEveryFrameInOrder() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp(queueSize: 64))
        var expected: [[UInt8]] = []
        for round in 0..<20 {
            for i in 0..<64 {
                let f = Frames.header() + Frames.ethernet(length: 60 + i, seed: UInt8(round))
                expected.append(f)
                rig.transmit(f, head: UInt16(i), kick: false)
            }
            rig.kick(VirtioNet.transmitQueue)
            XCTAssertEqual(rig.tx.usedIdx, UInt16((round + 1) * 64))
        }
        assertFrames(rig.backend.sent, expected)
    }

    // MARK: Receive

    func testFrameSpreadsOverMergedBuffersWithNumBuffers() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.rx.setUsedEvent(0)
        rig.postReceiveBuffers(64, size: 4096)
        XCTAssertEqual(rig.backend.readableRequests, 1, "the host is empty: the device asks to hear of frames")
        let payload = Frames.ethernet(length: 65_000, seed: 1)
        rig.backend.incoming = [Frames.header(flags: 1, gso: 1, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16) + payload]
        rig.net.backendReadable()
        let got = rig.received()
        XCTAssertEqual(got.count, 1)
        assertFrames(got.map(\.frame), [payload])
        XCTAssertEqual(got.first.map { Int($0.header[10]) }, (65_012 + 4095) / 4096, "num_buffers")
        XCTAssertEqual(got.first?.header[1], 1, "GSO type passed through")
        XCTAssertEqual(rig.interrupts(NetRig.rxVector), 1, "one interrupt for the frame")
        XCTAssertEqual(rig.net.statistics.receivedFrames, 1)
        XCTAssertEqual(rig.backend.readableRequests, 2, "and again once the host is empty")
    }

    func testWithoutMergeableBuffersAFrameTooLargeForTheBufferIsDroppedAndTheBufferKept() throws {
        let rig = try NetRig(mergeable: false)
        XCTAssertTrue(rig.bringUp { $0 & ~(F.guestTSO4 | F.guestTSO6 | F.guestUFO | F.guestECN) })
        rig.postReceiveBuffers(1, size: 1526)
        let small = Frames.ethernet(length: 1514, seed: 4)
        rig.backend.incoming = [Frames.header() + Frames.ethernet(length: 9000), Frames.header() + small]
        rig.net.backendReadable()
        let got = rig.received()
        XCTAssertEqual(got.map(\.frame), [small])
        XCTAssertEqual(got.first?.header[10], 1, "num_buffers is 1 without MRG_RXBUF")
        XCTAssertEqual(rig.net.statistics.receiveDropped, 1)
    }

    /// Backpressure: a guest without buffers makes the device hold one frame and read no more;
    /// when buffers come, every frame arrives, in order.
    /// The host's answer to a frame (a TCP ACK) is usually on the TAP when `writev` returns: the
    /// transmit notification delivers it, without waiting for the poller thread's wake-up.
    func testAFrameWaitingOnTheHostArrivesWithTheNextTransmit() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.postReceiveBuffers(4, size: 2048)
        let answer = Frames.ethernet(length: 60, seed: 9)
        rig.backend.incoming = [Frames.header() + answer]   // no `backendReadable`: the poller has not woken
        XCTAssertEqual(rig.rx.usedIdx, 0)
        rig.tx.setUsedEvent(0)
        rig.transmit(Frames.header() + Frames.ethernet(length: 100, seed: 1))
        XCTAssertEqual(rig.backend.sent.count, 1)
        assertFrames(rig.received().map(\.frame), [answer])
        XCTAssertEqual(rig.interrupts(NetRig.rxVector), 1)
    }

    func testNoFrameIsLostWhileTheGuestHasNoBuffers() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        let frames = (0..<100).map { Frames.ethernet(length: 200 + $0, seed: UInt8($0)) }
        rig.backend.incoming = frames.map { Frames.header() + $0 }
        rig.net.backendReadable()
        XCTAssertEqual(rig.backend.framesTaken, 1, "one frame held, the rest left in the host")
        XCTAssertEqual(rig.rx.usedIdx, 0)
        XCTAssertEqual(rig.backend.readableRequests, 0, "no wake-ups asked for while the guest is full")
        XCTAssertEqual(rig.rx.availEvent, 0, "the driver is asked to notify for its next buffer")

        var got: [[UInt8]] = []
        var head: UInt16 = 0
        while got.count < frames.count {
            rig.postReceiveBuffers(16, size: 2048, firstHead: head)
            head &+= 16
            got = rig.received().map(\.frame)
        }
        assertFrames(got, frames)
        XCTAssertEqual(rig.net.statistics.receiveDropped, 0)
    }

    /// Only part of a merged frame's buffers are there: none is taken until all are.
    func testAFrameWaitsUntilEnoughMergedBuffersAreAvailable() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.postReceiveBuffers(4, size: 1024)
        let payload = Frames.ethernet(length: 10_000)
        rig.backend.incoming = [Frames.header() + payload]
        rig.net.backendReadable()
        XCTAssertEqual(rig.rx.usedIdx, 0, "4 KiB of buffers do not hold 10 KiB")
        XCTAssertEqual(rig.rx.availEvent, 4, "notify me when you add past what is there")
        rig.postReceiveBuffers(8, size: 1024, firstHead: 4)
        assertFrames(rig.received().map(\.frame), [payload])
    }

    /// A guest that never refills: the host keeps sending; swhv holds one frame, never reads more
    /// and does not spin.
    func testGuestThatNeverRefillsCostsOneFrame() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.postReceiveBuffers(8, size: 2048)
        let requests = rig.backend.readableRequests
        rig.backend.endless = { Frames.header() + Frames.ethernet(length: 1500) }
        for _ in 0..<50 { rig.net.backendReadable() }
        XCTAssertEqual(rig.rx.usedIdx, 8, "the eight buffers were filled")
        XCTAssertEqual(rig.backend.framesTaken, 9, "plus one frame held")
        XCTAssertEqual(rig.backend.readableRequests, requests, "no wake-ups asked for while the guest is full")
    }

    /// A host flooding frames the device drops: each call stops after its budget and asks to be
    /// called again, so the guest gets to run.
    func testFloodOfDroppedFramesIsBoundedPerCall() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.postReceiveBuffers(8, size: 2048)
        let requests = rig.backend.readableRequests
        rig.backend.endless = { Frames.header() + Frames.ethernet(length: 10) }
        rig.net.backendReadable()
        XCTAssertEqual(rig.backend.framesTaken, VirtioNet.receiveBudget)
        XCTAssertEqual(rig.backend.readableRequests, requests + 1, "to be called again when the guest has run")
        XCTAssertEqual(rig.net.statistics.receiveDropped, VirtioNet.receiveBudget)
        XCTAssertEqual(rig.rx.usedIdx, 0)
    }

    /// What a host may not send: longer than the largest frame, offloads the guest did not take,
    /// runts. Each is dropped; good frames around them arrive.
    func testHostFramesBeyondWhatWasNegotiatedAreDropped() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp { $0 & ~(F.guestTSO6 | F.guestUFO | F.guestECN) })
        rig.postReceiveBuffers(64, size: 4096)
        let ok = Frames.ethernet(length: 100, seed: 7)
        let bad: [[UInt8]] = [
            Frames.header() + Frames.ethernet(length: VirtioNet.maxFrameSize + 1),  // held whole, too long
            Frames.header() + Frames.ethernet(length: 200_000),                     // cut by the backend
            Frames.header() + Frames.ethernet(length: 13),
            Array(Frames.header().prefix(8)),
            Frames.header(flags: 1, gso: 4, gsoSize: 1400, csumStart: 54, csumOffset: 16) + Frames.ethernet(length: 3000),
            Frames.header(flags: 1, gso: 3, gsoSize: 1400, csumStart: 34, csumOffset: 6) + Frames.ethernet(length: 3000),
            Frames.header(flags: 1, gso: 0x81, gsoSize: 1400, csumStart: 34, csumOffset: 16) + Frames.ethernet(length: 3000),
            Frames.header(flags: 1, gso: 1, csumStart: 34, csumOffset: 16) + Frames.ethernet(length: 3000),
            Frames.header(flags: 1, csumStart: 90, csumOffset: 16) + Frames.ethernet(length: 100),
            Frames.header(flags: 4) + Frames.ethernet(length: 100),
        ]
        for b in bad { rig.backend.incoming += [b, Frames.header() + ok] }
        rig.net.backendReadable()
        assertFrames(rig.received().map(\.frame), [[UInt8]](repeating: ok, count: bad.count))
        XCTAssertEqual(rig.net.statistics.receiveDropped, bad.count)
    }

    func testWithoutGuestChecksumFlagsAreClearedAndPartialChecksumsDropped() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp { $0 & ~(F.guestCsum | F.guestTSO4 | F.guestTSO6 | F.guestUFO | F.guestECN) })
        rig.postReceiveBuffers(4, size: 2048)
        let f = Frames.ethernet(length: 100)
        rig.backend.incoming = [Frames.header(flags: 2) + f, Frames.header(flags: 1, csumStart: 34, csumOffset: 6) + f]
        rig.net.backendReadable()
        let got = rig.received()
        XCTAssertEqual(got.map(\.frame), [f])
        XCTAssertEqual(got.first?.header[0], 0, "DATA_VALID is cleared: the guest did not negotiate GUEST_CSUM")
        XCTAssertEqual(rig.net.statistics.receiveDropped, 1)
    }

    /// A merged buffer too small for the header is a driver bug: the device needs a reset, and after
    /// one it works again.
    func testMergedBufferSmallerThanTheHeaderNeedsReset() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.postReceiveBuffers(1, size: 8)
        rig.backend.incoming = [Frames.header() + Frames.ethernet(length: 60)]
        rig.net.backendReadable()
        XCTAssertNotEqual(rig.status & VirtioStatus.needsReset.rawValue, 0)
        XCTAssertEqual(rig.rx.usedIdx, 0)
        XCTAssertTrue(rig.bringUp())
        rig.postReceiveBuffers(1, size: 2048)
        XCTAssertEqual(rig.received().map(\.frame), [Frames.ethernet(length: 60)], "the held frame after the reset")
    }

    func testNothingIsReceivedBeforeDriverOK() throws {
        let rig = try NetRig()
        rig.backend.incoming = [Frames.header() + Frames.ethernet(length: 60)]
        rig.net.backendReadable()
        XCTAssertEqual(rig.backend.framesTaken, 0)
    }

    // MARK: Link

    func testLinkChangesReachTheStatusFieldWithAConfigInterrupt() throws {
        let rig = try NetRig()
        XCTAssertTrue(rig.bringUp())
        rig.net.setLinkUp(false)
        XCTAssertEqual(rig.config(6, size: 2), 0)
        XCTAssertEqual(rig.interrupts(NetRig.configVector), 1)
        rig.net.setLinkUp(false)
        XCTAssertEqual(rig.interrupts(NetRig.configVector), 1, "no change, no interrupt")
        rig.net.setLinkUp(true)
        XCTAssertEqual(rig.config(6, size: 2), 1)
        XCTAssertEqual(rig.interrupts(NetRig.configVector), 2)

        let quiet = try NetRig()
        XCTAssertTrue(quiet.bringUp { $0 & ~F.status })
        quiet.net.setLinkUp(false)
        XCTAssertEqual(quiet.interrupts(NetRig.configVector), 0, "a driver without STATUS assumes the link is up")
    }

    // MARK: State

    func testStateRoundTripsAndForeignStatesAreRefused() throws {
        let a = try NetRig()
        XCTAssertTrue(a.bringUp { $0 & ~F.guestUFO })
        a.net.setLinkUp(false)
        let state = try throughJSON(a.transport.captureState())
        let b = try NetRig()
        try b.transport.restoreState(state)
        XCTAssertEqual(b.net.negotiatedFeatures, a.net.negotiatedFeatures)
        XCTAssertFalse(b.net.linkUp)
        XCTAssertEqual(b.backend.offloadsSet.last, a.backend.offloadsSet.last, "the TAP gets the offloads back")
        XCTAssertEqual(try throughJSON(b.transport.captureState()), state)

        let otherMAC = try NetRig(mac: [0x52, 0x54, 0, 1, 2, 3])
        XCTAssertThrowsError(try otherMAC.net.restoreDeviceState(state.device)) {
            guard case .mismatch = $0 as? DeviceStateError else { return XCTFail("\($0)") }
        }
        let noOffloads = try NetRig(offloads: .none)
        XCTAssertThrowsError(try noOffloads.net.restoreDeviceState(state.device))
        XCTAssertThrowsError(try a.net.restoreDeviceState(.none))
    }

    func testMACTextParsesAndFormats() {
        XCTAssertEqual(VirtioNet.parse(mac: "52:54:00:12:34:5a"), [0x52, 0x54, 0, 0x12, 0x34, 0x5A])
        XCTAssertEqual(VirtioNet.parse(mac: "52-54-00-12-34-5A"), [0x52, 0x54, 0, 0x12, 0x34, 0x5A])
        for bad in ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:5g", "5:54:00:12:34:56", "52:54:00:12:34:567"] {
            XCTAssertNil(VirtioNet.parse(mac: bad), bad)
        }
        XCTAssertEqual(VirtioNet.format(mac: [0x52, 0x54, 0, 0x0A, 0xBC, 0xFF]), "52:54:00:0a:bc:ff")
    }

    /// Frames compared without printing megabytes on a mismatch.
    func assertFrames(_ got: [[UInt8]], _ expected: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) {
        guard got != expected else { return }
        let i = zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, expected.count)
        XCTFail("\(got.count) frames, expected \(expected.count); first difference at frame \(i) "
                + "(\(i < got.count ? got[i].count : -1) vs \(i < expected.count ? expected[i].count : -1) bytes)",
                file: file, line: line)
    }
}
