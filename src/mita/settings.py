"""Every setting Mita reads from its environment, in one place, read once per process.

A process (``mita serve``, its workers, ``mita worker``, a CLI command) builds one :class:`Settings` at start and
hands it to the composition root (:mod:`mita.compose`); nothing below that reads the environment for its own
configuration. The README's settings table is made from this class (``python -m mita.settings``), and a test
keeps the two equal.

Secrets (the master key, the HSM PIN, the webhook secret) are ``SecretStr``: they do not show in a ``repr``,
a log line or an error. Each can come from a file instead (``..._FILE``), which keeps it out of the process
environment as well as out of ``ps``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MITA_", extra="ignore", frozen=True)


class MasterKeySettings(_Base):
    """What sealing needs (read on its own, so that another setting's typo cannot stop a key from opening)."""

    master_key: SecretStr | None = Field(default=None, description="the 256-bit master key, 64 hex digits")
    master_key_file: str = Field(
        default="~/.config/mita/master.key", description="file holding the master key (made, mode 0600, if missing)"
    )


class HsmSettings(_Base):
    """The PKCS#11 keystore."""

    hsm_module: str = Field(default="/usr/lib/softhsm/libsofthsm2.so", description="the PKCS#11 module of the HSM")
    hsm_token: str = Field(default="", description="label of the HSM token holding the vending keys (empty: no HSM)")
    hsm_pin: SecretStr | None = Field(default=None, description="the HSM token's user PIN")
    hsm_pin_file: str = Field(default="", description="file holding the HSM PIN instead")


class OutboxSettings(_Base):
    """The outbox worker's senders."""

    outbox_senders: str = Field(
        default="",
        description="channel=sender pairs over the defaults "
        "`receipt=log,sms=log,campaign.generate=campaign,headend=headend` "
        "(senders: log, webhook, null, campaign, headend, off)",
    )
    webhook_url: str = Field(default="", description="where the webhook sender posts")
    webhook_urls: str = Field(default="", description="`name=url` pairs: a recipient's own webhook URL")
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key signing webhook bodies")
    webhook_secret_file: str = Field(default="", description="file holding the webhook secret instead")
    webhook_timeout: float = Field(default=10, gt=0, le=300, description="seconds a webhook may take to answer")

    def sender_env(self) -> dict[str, str]:
        """The senders' configuration as the ``MITA_*`` mapping :mod:`mita.outbox.senders` reads."""
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret is not None else ""
        values = {
            "outbox_senders": self.outbox_senders, "webhook_url": self.webhook_url, "webhook_urls": self.webhook_urls,
            "webhook_secret": secret, "webhook_secret_file": self.webhook_secret_file,
            "webhook_timeout": str(self.webhook_timeout),
        }  # fmt: skip
        return {f"MITA_{k.upper()}": v for k, v in values.items() if v}


class ChannelSettings(_Base):
    """The payment and message channels (``mita.channels``): M-Pesa (Daraja), SMS through Kannel, USSD."""

    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="the address providers reach Mita's callbacks at (`https://vend.example.com` in production)",
    )
    hook_secret: SecretStr | None = Field(
        default=None, description="the secret path segment of every provider callback (`/hooks/.../<secret>`)"
    )
    hook_secret_file: str = Field(default="", description="file holding the callback secret instead")
    currency: str = Field(default="KES", min_length=3, max_length=3, description="the currency payments are in")
    mpesa_url: str = Field(
        default="", description="Daraja's base URL (`https://api.safaricom.co.ke`; empty: no M-Pesa)"
    )
    mpesa_shortcode: str = Field(default="174379", description="the paybill or till that payments go to")
    mpesa_consumer_key: SecretStr | None = Field(default=None, description="the Daraja app's consumer key")
    mpesa_consumer_secret: SecretStr | None = Field(default=None, description="the Daraja app's consumer secret")
    mpesa_passkey: SecretStr | None = Field(default=None, description="the STK push passkey of the shortcode")
    mpesa_initiator: str = Field(default="", description="the API operator for status queries and reversals")
    mpesa_credential: SecretStr | None = Field(
        default=None, description="the initiator's security credential (its password encrypted, base64)"
    )
    mpesa_unverified_cap: int = Field(
        default=500_000,
        ge=0,
        description="minor units an unverified callback may buy at once; above it, vended once the provider confirms",
    )
    kannel_url: str = Field(
        default="", description="Kannel's sendsms address (`http://127.0.0.1:13013`; empty: no SMS)"
    )
    kannel_user: str = Field(default="mita", description="the Kannel sendsms user")
    kannel_password: SecretStr | None = Field(default=None, description="the Kannel sendsms user's password")
    sms_from: str = Field(default="MITA", description="the sender name or short code of Mita's SMS")


class Settings(MasterKeySettings, HsmSettings, OutboxSettings, ChannelSettings):
    """Everything, for a process's composition root."""

    database_url: str = Field(
        default="sqlite:///mita.db",
        description="SQLAlchemy URL of the database (a password here, not on a command line)",
    )
    threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="request threads, and database connections, per API worker (the event loop's vends have as "
        "many connections again, at least 4)",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body the API reads, in bytes"
    )
    reversal_window_hours: float = Field(
        default=24, ge=0, description="how long after a vend an operator may reverse it"
    )
    key_warn_days: int = Field(default=30, ge=0, description="days before a key's end that vends answer a warning")
    delivery_expiry_hours: float = Field(
        default=24, gt=0, description="how long the head-end tries to deliver a connected meter's tokens"
    )
    max_clock_skew: float = Field(
        default=120,
        gt=0,
        description="seconds the server's clock may differ from PostgreSQL's before vends, the console and the "
        "outbox stop (TIDs and due times come from the server's clock; SQLite: not checked)",
    )
    console_signins_per_minute: float = Field(
        default=10,
        gt=0,
        description="console sign-in tries one client address may make a minute (10 at once, then "
        "this rate; per server process)",
    )
    metrics_public: bool = Field(
        default=True, description="`/metrics` answers without an API key (false: it needs an admin or operator key)"
    )
    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="the MQTT broker of telemetry and MQTT-native meters (`mqtt://[user[:password]@]host:port`)",
    )
    mqtt_group: str = Field(
        default="mita-ingest",
        description="the shared subscription group the ingest workers split the meters' messages in",
    )
    mqtt_resend_after: float = Field(
        default=60,
        gt=0,
        description="seconds an MQTT meter's command the broker took waits for the meter's answer before it is "
        "published again (a broker can lose what it took); twice as long before each further re-send",
    )
    mqtt_max_sends: int = Field(
        default=6,
        ge=1,
        le=20,
        description="times one MQTT command is published at most, its first publish and re-sends (and tries the "
        "broker did not take) counted; 1: never re-sent",
    )
    readings_retention_months: int = Field(
        default=24, ge=1, le=240, description="months of readings kept; older monthly partitions are dropped"
    )
    low_credit_days: float = Field(
        default=3, gt=0, le=60, description="days of credit left, by recent consumption, that warn the customer"
    )


def table() -> str:
    """The settings as a Markdown table: environment variable, default, meaning."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, bool):
            default = str(default).lower()  # as the environment variable is written
        shown = "(none)" if default in (None, "") else f"`{default}`"
        rows.append(f"| `MITA_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
