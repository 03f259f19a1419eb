"""The console's labels in Simplified Chinese (the default) and English, and the language a
request asked for (``?lang=en`` once, remembered in a cookie)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from aiohttp import web

from dispatcher.console import i18n_ops
from dispatcher.core.clock import display_zone

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_COOKIE = "ebd_lang"

# The header's navigation, in order: (label key under "nav.", path).
NAV: tuple[tuple[str, str], ...] = (
    ("alerts", "/alerts"),
    ("new", "/alerts/new"),
    ("approvals", "/approvals"),
    ("terminals", "/terminals"),
    ("drills", "/drills"),
    ("templates", "/templates"),
    ("people", "/people"),
)

# key → (zh, en). The pages of the operations side (terminals, drills, people, templates)
# keep theirs in i18n_ops, merged below. Keys under "js." are also handed to console.js.
LABELS: dict[str, tuple[str, str]] = {
    "app.title": ("应急广播调度台", "Emergency broadcast console"),
    "nav.skip": ("跳到正文", "Skip to content"),
    "nav.label": ("主导航", "Main navigation"),
    "nav.alerts": ("预警信息", "Alerts"),
    "nav.new": ("编制预警", "New alert"),
    "nav.approvals": ("待审批", "Approvals"),
    "nav.terminals": ("终端", "Terminals"),
    "nav.drills": ("演练", "Drills"),
    "nav.templates": ("模板", "Templates"),
    "nav.people": ("人员", "People"),
    "nav.switch_lang": ("English", "中文"),
    "nav.sign_out": ("退出登录", "Sign out"),
    # Sign-in
    "login.title": ("登录", "Sign in"),
    "login.login": ("用户名", "Login name"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Sign in"),
    "login.intro": (
        "请使用本单位管理员为您开设的账号登录。",
        "Sign in with the account your office's administrator gave you.",
    ),
    # Alerts list
    "alerts.title": ("预警信息", "Alerts"),
    "alerts.filter": ("筛选", "Filter"),
    "alerts.status": ("类别", "Status"),
    "alerts.severity": ("颜色", "Colour"),
    "alerts.region": ("地区代码或名称", "Region code or name"),
    "alerts.since": ("起始日期", "From"),
    "alerts.until": ("截止日期", "To"),
    "alerts.any": ("全部", "Any"),
    "alerts.apply": ("筛选", "Apply"),
    "alerts.reset": ("清除", "Clear"),
    "alerts.none": ("没有符合条件的预警。", "No alert matches."),
    "alerts.col.sent": ("发布时间", "Sent"),
    "alerts.col.headline": ("标题", "Headline"),
    "alerts.col.severity": ("颜色", "Colour"),
    "alerts.col.status": ("类别", "Status"),
    "alerts.col.areas": ("地区", "Areas"),
    "alerts.col.progress": ("播放进度", "Played"),
    "alerts.col.state": ("状态", "State"),
    # Compose
    "new.title": ("编制预警", "New alert"),
    "new.template": ("模板", "Template"),
    "new.template.pick": ("请选择模板", "Pick a template"),
    "new.hazard": ("灾种", "Hazard"),
    "new.areas": ("发布区域", "Areas"),
    "new.area_search": ("按名称或代码查找地区", "Find a region by name or code"),
    "new.area_add": ("添加", "Add"),
    "new.area_up": ("上一级", "Up"),
    "new.area_browse": ("下级地区", "Regions below"),
    "new.area_none": ("尚未选择区域。", "No area chosen yet."),
    "new.area_remove": ("移除", "Remove"),
    "new.status": ("类别", "Status"),
    "new.headline": ("标题", "Headline"),
    "new.text": ("广播内容（大喇叭播放）", "Loudspeaker text (what is said)"),
    "new.sms_text": ("短信内容", "SMS text"),
    "new.instruction": ("防御指引", "Instructions"),
    "new.channels": ("发布渠道", "Channels"),
    "new.expires_in": ("有效时长（分钟）", "Valid for (minutes)"),
    "new.preview": ("预览", "Preview"),
    "new.send": ("发布", "Send"),
    "new.submit": ("提交审批", "Submit for approval"),
    "new.stale": (
        "区域或内容已改动，请重新预览后再发布。",
        "Areas or texts changed since the preview: preview again before sending.",
    ),
    "new.pending": (
        "已提交审批，等待审批员审批，尚未发布。",
        "Submitted for approval; nothing is sent until an approver approves it.",
    ),
    "new.sent": ("预警已发布。", "The alert was sent."),
    # Preview
    "preview.title": ("发布前预览", "Preview before sending"),
    "preview.villages": ("行政村", "Villages"),
    "preview.villages_without_terminal": ("无终端的行政村", "Villages without a terminal"),
    "preview.terminals": ("终端", "Terminals"),
    "preview.terminals_offline": ("当前离线终端", "Terminals offline now"),
    "preview.recipients": ("短信接收人", "SMS recipients"),
    "preview.recipients_covering_offline": (
        "覆盖离线终端的短信接收人",
        "SMS recipients covering offline terminals",
    ),
    "preview.sms_segments": ("短信条数（每人）", "SMS segments (each)"),
    "preview.sms_messages": ("短信总条数", "SMS messages in all"),
    "preview.sms_cost_yuan": ("短信费用（元）", "SMS cost (yuan)"),
    "preview.regions": ("分地区", "By region"),
    "preview.region": ("地区", "Region"),
    "preview.level": ("级别", "Level"),
    "preview.offline_list": ("离线终端", "Offline terminals"),
    "preview.last_seen": ("最后在线", "Last seen"),
    "preview.sms": ("短信兜底", "SMS fallback"),
    "preview.audio": ("广播试听", "Listen to the announcement"),
    "preview.audio_none": (
        "播报音频尚未生成：终端将按文字自行朗读。",
        "The announcement is not rendered yet: terminals will speak the text themselves.",
    ),
    "preview.audio_duration": ("时长", "Length"),
    "preview.audio_region": ("本地区版本", "This region's version"),
    "preview.unreachable": (
        "所选区域内没有可送达的终端或短信接收人，不能发布。",
        "Nothing in these areas can be reached (no terminal, no SMS recipient): refused.",
    ),
    "preview.none_offline": ("没有离线终端。", "No terminal is offline."),
    # Approvals
    "approvals.title": ("待审批预警", "Alerts awaiting approval"),
    "approvals.none": ("没有待审批的预警。", "Nothing awaits approval."),
    "approvals.composer": ("编制人", "Composer"),
    "approvals.submitted": ("提交时间", "Submitted"),
    "approvals.expires": ("审批截止", "Approve before"),
    "approvals.approve": ("批准发布", "Approve and send"),
    "approvals.reject": ("驳回", "Reject"),
    "approvals.reason": ("驳回理由", "Reason for rejecting"),
    "approvals.reason_needed": ("请填写驳回理由。", "Give a reason for rejecting."),
    "approvals.approved": ("已批准并发布。", "Approved and sent."),
    "approvals.rejected": ("已驳回。", "Rejected."),
    # Alert page
    "alert.title": ("预警详情", "Alert"),
    "alert.submitted": ("提交", "Submitted"),
    "alert.approved": ("批准", "Approved"),
    "alert.approver": ("审批人", "Approver"),
    "alert.sent": ("发布", "Sent"),
    "alert.expires": ("失效", "Expires"),
    "alert.sender": ("发布单位", "Sender"),
    "alert.tree": ("送达情况", "Delivery"),
    "alert.region": ("地区 / 终端", "Region / terminal"),
    "alert.expected": ("应到", "Expected"),
    "alert.received": ("已收到", "Received"),
    "alert.played": ("已播放", "Played"),
    "alert.failed": ("失败", "Failed"),
    "alert.pending": ("未回执", "Pending"),
    "alert.progress": ("进度", "Progress"),
    "alert.events": ("重发与升级", "Resends and escalations"),
    "alert.no_events": ("暂无。", "None yet."),
    "alert.update": ("更新预警", "Update"),
    "alert.cancel": ("解除预警", "Cancel alert"),
    "alert.cancel_confirm": (
        "确定要解除这条预警吗？所有终端将收到解除通知。",
        "Cancel this alert? Every terminal will be told it is cancelled.",
    ),
    "alert.cancelled": ("预警已解除。", "The alert is cancelled."),
    "alert.live": ("实时更新中", "Live"),
    "alert.done": ("全部回执已到", "Every acknowledgement is in"),
    "alert.expand": ("展开", "Expand"),
    "alert.collapse": ("收起", "Collapse"),
    "alert.state": ("状态", "State"),
    # Shared words
    "sev.red": ("红色", "Red"),
    "sev.orange": ("橙色", "Orange"),
    "sev.yellow": ("黄色", "Yellow"),
    "sev.blue": ("蓝色", "Blue"),
    "dstate.queued": ("排队中", "Queued"),
    "dstate.dispatching": ("发送中", "Sending"),
    "dstate.partial": ("部分发送失败", "Partly sent"),
    "dstate.dispatched": ("已发送", "Sent"),
    "dstate.cancelled": ("已解除", "Cancelled"),
    "dstate.superseded": ("已被更新", "Superseded"),
    "dstate.expired": ("已过期", "Expired"),
    "dstate.unknown": ("未知", "Unknown"),
    "tstate.pending": ("未回执", "Pending"),
    "tstate.received": ("已收到", "Received"),
    "tstate.playing": ("播放中", "Playing"),
    "tstate.played": ("已播放", "Played"),
    "tstate.failed": ("失败", "Failed"),
    "tstate.cancelled": ("已停播", "Stopped"),
    "tstate.no_ack": ("无回执", "No answer"),
    "status.actual": ("正式", "Actual"),
    "status.exercise": ("演练", "Exercise"),
    "status.test": ("测试", "Test"),
    "channel.loudspeaker": ("大喇叭", "Loudspeaker"),
    "channel.sms": ("短信", "SMS"),
    "level.province": ("省", "Province"),
    "level.city": ("市", "City"),
    "level.county": ("县", "County"),
    "level.township": ("乡镇", "Township"),
    "level.village": ("村", "Village"),
    "level.terminal": ("终端", "Terminal"),
    "common.loading": ("加载中…", "Loading…"),
    "common.error": ("出错了", "Something went wrong"),
    "common.close": ("关闭", "Close"),
    "common.yes": ("是", "Yes"),
    "common.no": ("否", "No"),
    "common.more": ("更多", "More"),
    "common.unauthorized": ("登录已失效，请重新登录。", "Your session ended: sign in again."),
}


def merged() -> dict[str, tuple[str, str]]:
    return {**LABELS, **i18n_ops.LABELS}


def label(key: str, lang: str) -> str:
    zh, en = merged()[key]
    return en if lang == "en" else zh


def lang_of(request: web.Request) -> str:
    """``?lang=`` when given, else the cookie it set, else Chinese."""
    for candidate in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGS:
            return candidate
    return DEFAULT_LANG


def remember_lang(request: web.Request, response: web.StreamResponse) -> None:
    """A page opened with ``?lang=`` keeps that language on the pages after it."""
    chosen = request.query.get("lang")
    if chosen in LANGS:
        response.set_cookie(
            LANG_COOKIE, chosen, max_age=365 * 86400, path="/", httponly=True, samesite="Strict"
        )


def install_globals(env: jinja2.Environment) -> None:
    env.globals["LANGS"] = LANGS
    env.globals["NAV"] = NAV

    @jinja2.pass_context
    def t(context: Any, key: str) -> str:
        return label(key, context.get("lang", DEFAULT_LANG))

    @jinja2.pass_context
    def js_labels(context: Any) -> dict[str, str]:
        # Every label: the pages build their tables in the browser, with the same words.
        lang = context.get("lang", DEFAULT_LANG)
        return {key: label(key, lang) for key in merged()}

    def utc_offset() -> str:
        # The zone the API shows times in, so the scripts show browser-made times in it too.
        raw = datetime.now(display_zone()).strftime("%z") or "+0000"
        return f"{raw[:3]}:{raw[3:5]}"

    env.globals["t"] = t
    env.globals["js_labels"] = js_labels
    env.globals["utc_offset"] = utc_offset
