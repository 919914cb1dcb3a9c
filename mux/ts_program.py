"""Which program the importer follows: the PAT and PMT state machine of one TS input.

`ProgramTracker.packet` takes each packet on PID 0 or on the current PMT PID and returns a
change when a table says something new: a new PMT PID (`PmtMoved`) or a new PMT (`Pmt`). The
importer applies it with `ProgramTracker.apply` at that packet's position, so the packets after
it are read under the new table. Identical repeats (about ten a second) are recognised by their
bytes and cost no parsing. Only the first program of the PAT is followed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mux.errors import Malformed
from mux.problems import BadSection, ExtraPrograms, Problem
from mux.psi import Pmt, SectionAssembler, parse_pat, parse_pmt
from mux.ts_packets import PACKET_SIZE


@dataclass(frozen=True, slots=True)
class PmtMoved:
    """The PAT points the followed program at a new PMT PID."""

    pid: int


class _Table:
    """Section state of one PSI PID: assembler, last continuity counter, last section."""

    __slots__ = ("assembler", "last_cc", "last_section")

    def __init__(self) -> None:
        self.assembler = SectionAssembler()
        self.last_cc = -1
        self.last_section = b""


class ProgramTracker:
    """PAT/PMT state of one input.

    `pmt_pid` is the PMT PID the PAT named (None before a PAT), `program` the PMT in force
    (None before the first one); `problems` collects `BadSection` / `ExtraPrograms` events
    (the caller drains it).
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._pat = _Table()
        self._pmt: _Table | None = None
        self._reported_programs: tuple[int, ...] = ()
        self.pmt_pid: int | None = None
        self.program: Pmt | None = None

    def rows(self, pid: npt.NDArray[np.integer], start: int) -> list[int]:
        """Rows >= `start` of a batch (by its PID column) that carry PAT or PMT packets."""
        view = pid[start:]
        mask = view == 0
        if self.pmt_pid is not None:
            mask |= view == self.pmt_pid
        return [r + start for r in np.flatnonzero(mask).tolist()]

    def packet(self, packet: npt.NDArray[np.uint8], pid: int) -> PmtMoved | Pmt | None:
        """Read one packet of PID 0 or the PMT PID; return the change it brings, if any."""
        b1, b3 = int(packet[1]), int(packet[3])
        if b1 & 0x80 or not b3 & 0x10:
            return None  # damaged, or no payload
        is_pat = pid == 0
        table = self._pat if is_pat else self._pmt
        if table is None:
            return None
        cc = b3 & 0x0F
        last, table.last_cc = table.last_cc, cc
        if cc == last:
            return None  # a duplicate
        if last >= 0 and cc != (last + 1) & 0x0F:
            table.assembler.reset()
        start = 5 + int(packet[4]) if b3 & 0x20 else 4
        if start >= PACKET_SIZE:
            return None
        name = "PAT" if is_pat else "PMT"
        try:
            sections = table.assembler.push(packet[start:].tobytes(), bool(b1 & 0x40))
        except Malformed as exc:
            self.problems.append(BadSection(pid=pid, table=name, reason=str(exc)))
            return None
        change: PmtMoved | Pmt | None = None
        for section in sections:
            if section[0] != (0x00 if is_pat else 0x02) or section == table.last_section:
                continue
            try:
                found = self._read_pat(section) if is_pat else self._read_pmt(section)
            except Malformed as exc:
                self.problems.append(BadSection(pid=pid, table=name, reason=str(exc)))
                continue
            table.last_section = section
            change = found or change
        return change

    def _read_pat(self, section: bytes) -> PmtMoved | None:
        programs = [e for e in parse_pat(section) if e.program_number != 0]
        if not programs:
            return None
        numbers = tuple(p.program_number for p in programs)
        if len(programs) > 1 and numbers != self._reported_programs:
            self._reported_programs = numbers
            self.problems.append(ExtraPrograms(programs=numbers, pmt_pid=programs[0].pid))
        return PmtMoved(programs[0].pid) if programs[0].pid != self.pmt_pid else None

    def _read_pmt(self, section: bytes) -> Pmt | None:
        pmt = parse_pmt(section)
        return pmt if pmt != self.program else None

    def apply(self, change: PmtMoved | Pmt) -> None:
        """Make `change` current (the caller has read every packet before it)."""
        if isinstance(change, PmtMoved):
            self.pmt_pid = change.pid
            self._pmt = _Table()
        else:
            self.program = change
