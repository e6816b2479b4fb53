"""The COSEM objects of one simulated meter, and what its two methods do to the meter model.

=====================  ===================  ====  ==================================================================
object                 OBIS                 IC    backed by
=====================  ===================  ====  ==================================================================
token gateway          0.0.19.40.0.255      115   method 1 *enter* runs :meth:`Meter.enter`; attr 6 token_status
                                                  from :mod:`mita.sim.status`; delivery method REMOTE
disconnect control     0.0.96.3.10.255      70    methods 1/2 remote disconnect/reconnect: :meth:`Meter.remote_switch`;
                                                  output_state is the model's switch (or valve)
clock                  0.0.1.0.0.255        8     the server's clock function (the model's clock is only an input)
active energy import   1.0.1.8.0.255        3     electricity and gas profiles: consumption in Wh
water volume           8.0.1.0.0.255        3     water profile: IEC 62056-6-1 medium A=8 (water), C=1 volume,
                                                  D=0 current value, E=0 total; in litres (m³ with scaler -3).
                                                  Not 1.0.1.8.0.255: A=1 is electricity, and a head-end that reads
                                                  "energy" off a water meter would be wrong by kind, not by scale
credit                 0.0.19.10.0.255      112   current_credit_amount: the utility's unit register (Wh or litres)
account                0.0.19.0.0.255       111   available_credit: the same figure
=====================  ===================  ====  ==================================================================

The model gets time passed in (sans-IO): every handler takes ``now`` from the server. After each change the state
file is saved by the ``save`` callback, the one :mod:`mita.meter.storage` gives ``mita meter``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from gurux_dlms import GXDateTime
from gurux_dlms.enums import Unit
from gurux_dlms.objects import (
    GXDLMSAccount,
    GXDLMSClock,
    GXDLMSCredit,
    GXDLMSDisconnectControl,
    GXDLMSRegister,
    GXDLMSTokenGateway,
)
from gurux_dlms.objects.enums import ControlMode, ControlState, TokenDelivery

from mita.meter import Meter, Result
from mita.meter.model import UTILITY_REGISTERS
from mita.meter.state import PER_BASE_UNIT

from . import carrier, status

TOKEN_GATEWAY = "0.0.19.40.0.255"
DISCONNECT_CONTROL = "0.0.96.3.10.255"
CLOCK = "0.0.1.0.0.255"
ACTIVE_ENERGY_IMPORT = "1.0.1.8.0.255"
WATER_VOLUME = "8.0.1.0.0.255"
CREDIT = "0.0.19.10.0.255"
ACCOUNT = "0.0.19.0.0.255"

#: Internal units (W·s, L·s/h) per Wh or litre: the unit of the registers and credit shown over DLMS.
PER_WH_OR_LITRE = 3600
#: Wh (or litres) per token base unit (0.1 kWh, 0.1 m³).
PER_BASE_UNIT_SHOWN = PER_BASE_UNIT // PER_WH_OR_LITRE


class MeterObjects:
    """One meter's object set. ``save`` is called after every change the meter made."""

    def __init__(self, meter: Meter, save: Callable[[Meter], None], encoding: carrier.Encoding | None = None) -> None:
        self.meter, self.save = meter, save
        self.encoding: carrier.Encoding = encoding or carrier.encoding_of(meter.profile.name)
        water = meter.profile.utility == "water"
        self.token_gateway = GXDLMSTokenGateway(TOKEN_GATEWAY)
        self.token_gateway.deliveryMethod = TokenDelivery.REMOTE
        self.token_gateway.statusCode = status.STATUS_CODE[Result.ACCEPT]  # nothing entered yet: no failure either
        self.token_gateway.dataValue = "00000000"
        self.disconnect = GXDLMSDisconnectControl(DISCONNECT_CONTROL)
        self.disconnect.controlMode = ControlMode.MODE_1  # remote disconnect and reconnect both allowed
        self.clock = GXDLMSClock(CLOCK)
        self.consumption = GXDLMSRegister(WATER_VOLUME if water else ACTIVE_ENERGY_IMPORT)
        # gurux's scaler is the multiplier 10**n (research note §1.1): litres shown as m³ with n = -3
        self.consumption.scaler, self.consumption.unit = (
            (0.001, Unit.VOLUME_CUBIC_METER) if water else (1, Unit.ACTIVE_ENERGY)
        )
        self.credit = GXDLMSCredit(CREDIT)
        self.account = GXDLMSAccount(ACCOUNT)

    @property
    def items(self) -> list[Any]:
        return [self.token_gateway, self.disconnect, self.clock, self.consumption, self.credit, self.account]

    def refresh(self, now: dt.datetime) -> None:
        """Push the model's values into the objects (a plain GET never calls ``onPreRead``: shims bug 4)."""
        meter = self.meter
        self.clock.time = GXDateTime(now)
        self.consumption.value = meter.state.consumed // PER_WH_OR_LITRE
        credit = self.credit_shown()
        self.credit.currentCreditAmount = credit
        self.account.availableCredit = credit
        closed = meter.switch_closed(now)
        self.disconnect.outputState = closed
        self.disconnect.controlState = ControlState.CONNECTED if closed else ControlState.DISCONNECTED

    def credit_shown(self) -> int:
        """The utility's unit credit register in Wh (electricity, gas) or litres (water), rounded down."""
        unit_register, _ = UTILITY_REGISTERS[self.meter.profile.utility]
        return self.meter.state.registers.get(unit_register, 0) // PER_WH_OR_LITRE

    def enter(self, data: bytes, now: dt.datetime) -> int:
        """Method 1 of the token gateway: the token status code it leaves in attribute 6."""
        tg = self.token_gateway
        tg.token, tg.time, tg.deliveryMethod = bytes(data), GXDateTime(now), TokenDelivery.REMOTE
        try:
            digits = carrier.unpack(bytes(data), self.encoding)
        except carrier.CarrierError as exc:
            tg.statusCode, tg.dataValue = status.FORMAT_FAILURE, status.data_bits(Result.FORMAT_ERROR)
            tg.descriptions = [str(exc).encode()]
            return int(tg.statusCode)
        entry = self.meter.enter(digits, now)
        self.save(self.meter)  # a reject changes the state too (the reject counter, the lockout)
        tg.statusCode, tg.dataValue = status.STATUS_CODE[entry.result], status.data_bits(entry.result)
        tg.descriptions = [entry.result.value.encode()]
        self.refresh(now)
        return int(tg.statusCode)

    def switch(self, closed: bool, now: dt.datetime) -> bool:
        """Methods 1 (disconnect, ``closed=False``) and 2 (reconnect) of the disconnect control: supply on after?"""
        on = self.meter.remote_switch(closed, now)
        self.save(self.meter)
        self.refresh(now)
        return on
