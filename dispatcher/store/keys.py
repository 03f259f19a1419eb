"""Every Redis key of every feature: the key schema on one screen, the prefix written once.

Braces around an alert id (and a drill id) are in the key itself: a Redis Cluster hash tag,
so every key of one alert hashes to one slot and a script may take them together. What still
mixes slots is listed in docs/redis-ha.md. ``LEGACY_PATTERNS``/``legacy_rename``: the names
keys had before, renamed when an engine starts (``Store.rename_legacy_keys``).

The engine (``{id}`` an alert id, ``{t}`` a terminal id, ``{code}`` a region code):

    ebd:alert:{id}              string  the alert's JSON (models.Alert)
    ebd:alerts                  zset    alert ids scored by sent time (ms)
    ebd:alert:{id}:dispatch     hash    dispatch state: state, queued_at, dispatched_at, expected,
                                        topics, cancelled_by, last_ack_ms, acks …
    ebd:alert:{id}:expected     hash    {t} → region code of every terminal expected to ack
    ebd:alert:{id}:tstate       hash    {t} → received | playing | played | failed | cancelled
                                        | no_ack (cancelled: stopped by a cancel or update;
                                        no_ack: silent after the last resend, escalated)
    ebd:alert:{id}:counts       hash    "{code}|{state}" → n for the province, cities, counties,
                                        townships above each expected terminal; "{code}|expected"
    ebd:alert:{id}:offline      set     expected terminals whose last state was offline at dispatch
    ebd:alert:{id}:resends      hash    {t} → resends sent to that terminal
    ebd:alert:{id}:escalations  list    escalation records (JSON) of this alert
    ebd:sweeps                  zset    alert ids scored by when their acks are next checked (ms)
    ebd:escalations             stream  every escalation: terminal failed after its resends
    ebd:idem:{office}:{key}     string  {"alert_id", "body"} of the first request with that key
    ebd:outbox                  stream  alert ids to dispatch; consumer group "dispatch"
    ebd:outbox:urgent           stream  the same for actual red and orange warnings, read first
    ebd:sweeps:urgent           zset    the same as ebd:sweeps for actual red and orange warnings
    ebd:sweeps:owner            hash    alert id → the instance sweeping it now (its lease lapsing
                                        hands the sweep over)
    ebd:acklog                  stream  every ack of a known alert, as received (drill reviews):
                                        one entry a recorded batch, see acklog_rows
    ebd:terms:region            hash    {t} → region code (the terminal registry)
    ebd:terms:meta              hash    {t} → {"kind", "registered_at"}
    ebd:terms:state             hash    {t} → last state message {"state", "at", "firmware", …}
    ebd:terms:creds             hash    {t} → its broker account {"line" (the password file's
                                        line: salted hash, never the password), "issued_at",
                                        "by"}; "~…" names are the engines' reload canaries
    ebd:terms:rejected:{t}      list    the latest reasons {t}'s acks were refused (JSON, newest
                                        first, bounded, expiring after the last)
    ebd:ping:{ping id}          list    the acks of a link test, until its caller takes them
    ebd:caughtup:{t}            string  the ``at`` of {t}'s latest online state answered with
                                        the alerts in force (EX 7 days): once per online event
    ebd:rterms:{code}           set     terminals at or below {code}, for each level of their path
    ebd:stats                   hash    ingestion counters (acks_malformed, acks_unknown_alert …)
    ebd:schema                  string  the key schema's version (SCHEMA_VERSION): 2 once keys
                                        named before the hash tags were renamed
    ebd:instances               hash    instance name → ms it last renewed its lease: the
                                        instances known to announce liveness
    ebd:lease:{instance}        string  the instance's liveness lease (PX lease_seconds); missing
                                        for a registered instance: it is dead or hung

SMS (``adapters/sms/store.py``; ``{job}`` an alert id, or ``{alert id}.esc`` for the texts
an escalation sends, the braces around the alert id either way; ``{r}`` a recipient key, see
``adapters.sms.gateway.recipient_key``):

    ebd:recips                  hash    {r} → person JSON (phone, name, languages, postings)
    ebd:rrecips:{code}          set     {r} of persons with a posting at or below {code}
    ebd:smsjob:{job}            hash    the job: alert_id, kind, expires_ms, exempt, signature,
                                        and per text variant {v}: {v}.body, {v}.text,
                                        {v}.segments, {v}.encoding
    ebd:smsjob:{job}:state      hash    {r} → queued | submitting | unknown | submitted
                                        | delivered | failed | cancelled | expired
    ebd:smsjob:{job}:info       hash    {r} → JSON: phone, lang, gateway, attempts, owner,
                                        retry_at, message_id, error, parts, ok (parts delivered)
    ebd:smsjob:{job}:counts     hash    state → n, "recipients", "segments"
    ebd:sms:outbox              stream  chunks of an urgent job's recipients to send; group "sms"
    ebd:sms:outbox:routine      stream  the same for every other job (read after the urgent)
    ebd:sms:doubt               zset    "{job}|{r}" in flight, unanswered, or taken with no
                                        receipt yet → when to ask the gateway about it (ms)
    ebd:sms:bucket:{gateway}    hash    the gateway's pace: next, urgent (ms, Redis clock), seq
    ebd:sms:bucket:{gw}:sent    zset    "seq:n" taken → when (ms): the last window's takes
    ebd:sms:rl:{r}:{hour}       string  texts that person was sent in that UTC hour
    ebd:sms:receipts            stream  every receipt as it arrived, for review
    ebd:sms:stats               hash    counters: receipts, receipts_orphan, …
    ebd:sms:rseen:{gw}:{sig}    string  a receipt post taken (sha256 of its signature; PX):
                                        the same signed post again is a replay, refused

Drills (``drills/store.py``):

    ebd:drills                  hash    drill id → Drill JSON (drills.models.Drill)
    ebd:drills:by_time          zset    drill ids scored by their scheduled time (ms)
    ebd:drills:by_year          zset    drill ids scored by their year (Drill.year)
    ebd:drills:township:{code}  set     drill ids of that township, every year
    ebd:drill:{id}:history      list    Edit JSON: planned, added, moved, cancelled, fired, …
    ebd:drill:{id}:report       string  DrillReport JSON, written once the window closed
    ebd:drill:{id}:acks         list    the drill alert's ack log entries (JSON), copied at the
                                        report so a review months later does not depend on the
                                        engine-wide ack log's trimming
    ebd:drills:version          string  bumped on every change: the scheduler re-reads the plan
    ebd:drills:leader           string  the instance holding the drill-scheduler lease (PX)
    ebd:drills:heartbeat        string  ms when the lease was last renewed, by whom
    ebd:drills:aps:jobs         hash    APScheduler's RedisJobStore: the scheduled jobs
    ebd:drills:aps:run_times    zset    APScheduler's RedisJobStore: their next run times

Approvals (``dispatcher/store/approvals.py``; ``{id}`` the id the alert gets once sent):

    ebd:approval:{id}           string  the submission's JSON (dispatcher.core.approval)
    ebd:approvals               zset    submission ids scored by submitted time (ms)

Templates (``dispatcher/store/templates.py``; ``{office}`` an office id):

    ebd:templates:{office}      hash    template id → the office's edit of it (JSON:
                                        dispatcher.core.warning_templates.TemplateEdit)

The audit log (``dispatcher/store/audit.py``; ``{seq}`` a record's number, from 1):

    ebd:audit:records           hash    {seq} → the record's JSON (dispatcher.core.audit)
    ebd:audit:by_time           zset    {seq} scored by the record's time (ms), for ranges
    ebd:audit:head              hash    seq, hash of the last record: the chain's head, kept
                                        apart so that a removed tail shows

CAP imports (``dispatcher/store/cap_index.py``; ``{m}`` the SHA-256 of a CAP message's
sender, identifier and sent):

    ebd:cap:{m}                 string  the alert id made from that CAP message, or
                                        "pending:{token}" while an import of it runs (EX)
    ebd:capfeed:{f}:lease       string  the instance polling the upstream CAP feed whose URL's
                                        SHA-256 is {f} (PX its interval: one poll per interval)

People (``dispatcher/store/people.py``; ``{p}`` a login id, ``{h}`` the SHA-256 of a secret):

    ebd:people                  hash    {p} → the person's JSON (name, office, roles, disabled,
                                        the scrypt hash of the password, never the password)
    ebd:office:{office}:people  set     {p} of the office's people
    ebd:ptokens                 hash    {h} of an API token → {"person", "id", "issued_at"}
    ebd:person:{p}:tokens       hash    token id → {h}: the person's tokens, to revoke by id
    ebd:session:{h}             string  a session: {"person", "csrf", "created_at"} (EX)
    ebd:person:{p}:sessions     set     {h} of the person's sessions, ended with a password
"""

from __future__ import annotations

PREFIX = "ebd:"
ALERTS = PREFIX + "alerts"
OUTBOX = PREFIX + "outbox"
OUTBOX_GROUP = "dispatch"
OUTBOX_URGENT = PREFIX + "outbox:urgent"
SWEEPS_URGENT = PREFIX + "sweeps:urgent"
SWEEP_OWNERS = PREFIX + "sweeps:owner"
ACKLOG = PREFIX + "acklog"
TERMS_REGION = PREFIX + "terms:region"
TERMS_META = PREFIX + "terms:meta"
TERMS_STATE = PREFIX + "terms:state"
TERMS_CREDS = PREFIX + "terms:creds"
STATS = PREFIX + "stats"
SWEEPS = PREFIX + "sweeps"
ESCALATIONS = PREFIX + "escalations"
INSTANCES = PREFIX + "instances"
IDEMPOTENCY_TTL = 24 * 3600
# Per-region counters stop at townships: village detail is in the tstate hash, and a counter
# per village would multiply the work of every ack by five.
COUNTED_PREFIXES = (2, 4, 6, 9)


def alert_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{{{alert_id}}}"


def dispatch_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:dispatch"


def expected_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:expected"


def tstate_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:tstate"


def counts_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:counts"


def offline_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:offline"


def expected_counts_key(alert_id: str) -> str:
    """The expected counters while ``record_expected.lua`` writes them slice by slice."""
    return f"{alert_key(alert_id)}:expected_counts"


def resends_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:resends"


def alert_escalations_key(alert_id: str) -> str:
    return f"{alert_key(alert_id)}:escalations"


def lease_key(instance: str) -> str:
    return f"{PREFIX}lease:{instance}"


def idempotency_key(office_id: str, key: str) -> str:
    return f"{PREFIX}idem:{office_id}:{key}"


def rejections_key(terminal_id: str) -> str:
    return f"{PREFIX}terms:rejected:{terminal_id}"


def ping_key(ping_id: str) -> str:
    return f"{PREFIX}ping:{ping_id}"


def region_terms_key(code: str) -> str:
    return f"{PREFIX}rterms:{code}"


def caught_up_key(terminal_id: str) -> str:
    return f"{PREFIX}caughtup:{terminal_id}"


# SMS (adapters/sms/store.py) -------------------------------------------------------------------

SMS_RECIPS = PREFIX + "recips"
SMS_OUTBOX = PREFIX + "sms:outbox"  # the urgent lane's (texts queued before lanes stay in it)
SMS_OUTBOX_ROUTINE = SMS_OUTBOX + ":routine"
SMS_OUTBOX_GROUP = "sms"
SMS_DOUBT = PREFIX + "sms:doubt"
SMS_RECEIPTS = PREFIX + "sms:receipts"
SMS_STATS = PREFIX + "sms:stats"
SMS_RECEIPT_SEEN = PREFIX + "sms:rseen:"  # + "{gateway}:{sha256 of the signature}"
# Not read in Python: adapters/sms/scripts/begin.lua and finish.lua still spell this prefix out.
SMS_LIMIT_PREFIX = PREFIX + "sms:rl:"


def sms_region_recips_key(code: str) -> str:
    return f"{PREFIX}rrecips:{code}"


def sms_job_key(job: str) -> str:
    # An escalation's job ("{alert id}.esc") shares its alert's slot.
    alert_id, dot, rest = job.partition(".")
    return f"{PREFIX}smsjob:{{{alert_id}}}{dot}{rest}"


def sms_job_keys(job: str) -> list[str]:
    """state, info, counts of a job, in the order the scripts take them."""
    return [f"{sms_job_key(job)}:state", f"{sms_job_key(job)}:info", f"{sms_job_key(job)}:counts"]


def sms_bucket_key(gateway: str) -> str:
    """A gateway's pace (scripts/take.lua); hash-tagged with its log, which the script takes too."""
    return f"{PREFIX}sms:bucket:{{{gateway}}}"


def sms_sent_log_key(gateway: str) -> str:
    """A gateway's log of what was taken from its pace: a sorted set, a window long."""
    return sms_bucket_key(gateway) + ":sent"


# Drills (drills/store.py); APScheduler's job store takes the two aps keys --------------------

DRILLS = PREFIX + "drills"
DRILLS_BY_TIME = PREFIX + "drills:by_time"
# A year's drills read without the others: planning, listing and compliance stay as fast with
# decades of drills stored.
DRILLS_BY_YEAR = PREFIX + "drills:by_year"
DRILLS_VERSION = PREFIX + "drills:version"
DRILLS_LEADER = PREFIX + "drills:leader"
DRILLS_HEARTBEAT = PREFIX + "drills:heartbeat"
APS_JOBS = PREFIX + "drills:aps:jobs"
APS_RUN_TIMES = PREFIX + "drills:aps:run_times"


def drill_township_key(code: str) -> str:
    return f"{PREFIX}drills:township:{code}"


def drill_history_key(drill_id: str) -> str:
    return f"{PREFIX}drill:{{{drill_id}}}:history"


def drill_report_key(drill_id: str) -> str:
    return f"{PREFIX}drill:{{{drill_id}}}:report"


def drill_acks_key(drill_id: str) -> str:
    return f"{PREFIX}drill:{{{drill_id}}}:acks"


# Audit log (dispatcher/store/audit.py) -------------------------------------------------------

AUDIT_RECORDS = PREFIX + "audit:records"
AUDIT_BY_TIME = PREFIX + "audit:by_time"
AUDIT_HEAD = PREFIX + "audit:head"


# People, their API tokens and sessions (dispatcher/store/people.py) -------------------------

PEOPLE = PREFIX + "people"


def office_people_key(office_id: str) -> str:
    return f"{PREFIX}office:{office_id}:people"


PERSON_TOKENS = PREFIX + "ptokens"


def person_tokens_key(person_id: str) -> str:
    return f"{PREFIX}person:{person_id}:tokens"


def session_key(digest: str) -> str:
    return f"{PREFIX}session:{digest}"


def person_sessions_key(person_id: str) -> str:
    return f"{PREFIX}person:{person_id}:sessions"


# Approvals (dispatcher/store/approvals.py) ---------------------------------------------------

APPROVALS = PREFIX + "approvals"


def approval_key(submission_id: str) -> str:
    return f"{PREFIX}approval:{submission_id}"


# Templates (dispatcher/store/templates.py) ---------------------------------------------------


def template_edits_key(office_id: str) -> str:
    return f"{PREFIX}templates:{office_id}"


# CAP imports (dispatcher/store/cap_index.py) ------------------------------------------------


def cap_message_key(digest: str) -> str:
    """A CAP message's entry: ``digest`` is the SHA-256 of its sender, identifier, sent."""
    return f"{PREFIX}cap:{digest}"


def cap_feed_lease_key(digest: str) -> str:
    """The poll lease of an upstream CAP feed (``dispatcher/http/cap_feeds.py``)."""
    return f"{PREFIX}capfeed:{digest}:lease"


# Import jobs (dispatcher/store/jobs.py) ------------------------------------------------------


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{{{job_id}}}"


def job_secret_key(job_id: str) -> str:
    """The credentials a terminal import handed out, until they are read once."""
    return f"{job_key(job_id)}:secret"


def instance_jobs_key(instance: str) -> str:
    """The jobs an engine instance is running, to be marked interrupted if it stops."""
    return f"{PREFIX}instance:{instance}:jobs"


# Key names before the hash tags -----------------------------------------------------------

# The key schema's version, once an engine renamed what it found named as before (2: tags).
SCHEMA = PREFIX + "schema"
SCHEMA_VERSION = 2
# The families whose keys got braces, as SCAN patterns of their old names.
LEGACY_PATTERNS = (PREFIX + "alert:*", PREFIX + "smsjob:*", PREFIX + "drill:*")


def legacy_rename(key: str) -> str | None:
    """The new name of a key named as before the hash tags; None if ``key`` is not one.

    Ids hold no ':' and no braces (``models.new_alert_id``, drill ids), so the id is what
    stands between the family's prefix and the next ':'.
    """
    for family in ("alert:", "smsjob:", "drill:"):
        head = PREFIX + family
        if not key.startswith(head) or "{" in key:
            continue
        ident, colon, suffix = key[len(head) :].partition(":")
        if not ident:
            return None
        if family == "smsjob:":
            return sms_job_key(ident) + colon + suffix
        return f"{head}{{{ident}}}{colon}{suffix}"
    return None
