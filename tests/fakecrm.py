"""A faithful fake of the vtenext / vtiger web service (``/webservice.php``).

Two flavours.  ``vtiger`` follows the recording of a real vtiger CRM 8.2.0
(``../shared/crm-transcripts/vtiger-8.2.0.jsonl``, replayed against this fake by
``tests/test_crm_transcripts.py``): where this docstring and the recording differ, the
recording is right.  ``vtenext`` follows the vtenext CE 20.04 sources
(``include/Webservices``, ``webservice.php``); nothing of it was measured.

Common to both:

* Answers are HTTP 200 ``application/json`` with ``{"success": true, "result": …}`` or
  ``{"success": false, "error": {"code", "message"}}``, except the HTTP 500s below.
* ``operation`` and ``sessionName`` come from ``$_REQUEST`` (query or form); an
  operation's own parameters come from the query string only (GET operations:
  getchallenge, describe, query, retrieve, sync, listtypes) or from a form-encoded body
  only (POST operations: login, login_pwd, create, update, revise, delete, logout).  So
  each operation works with one HTTP method: a login sent as GET reads no username and
  answers ``INVALID_AUTH_TOKEN``; a query sent as POST reads no query and answers
  ``ACCESS_DENIED`` "Permission to perform the operation is denied for query" (both
  recorded).  ``element`` is a JSON string inside the form.
* ``getchallenge`` tokens live 300 s; ``login`` wants ``md5(token + access key)`` in
  lower-case hex and does not consume the token (a good or a bad login alike).
  Sessions die after 1800 s idle (``SESSION_LEFT_IDLE``) or 86400 s
  (``SESSION_EXPIRED``); an unknown one is ``INVALID_SESSIONID``.
* VTQL: ``SELECT * | count(*) | col, … FROM Module [WHERE c op v (AND|OR) …]
  [ORDER BY col, … [ASC|DESC]] [LIMIT [offset,] n];`` — the ``;`` is required; vtiger
  caps n at 100 (and adds LIMIT 100), vtenext adds LIMIT 1000 when none is given and
  caps nothing.  Rows a non-admin may not read are dropped *after* the LIMIT (short
  pages).  ``id`` and reference values are ``<prefix>x<crmid>`` (quoted or not) compared
  as numbers; text compares case-insensitively.  Deleted records never appear.  Query
  rows have no ``label``; retrieve, create, update and revise answers have one.
* Deletes are soft (``deleted=1`` and a new modifiedtime).
* Events: ``reminder_time`` is written in seconds and read in minutes, and a whole
  number of hours gains a minute (3600 → '61'); a revise or update without
  ``reminder_time`` deletes the reminder (read back '').
* A Calendar record whose ``activitytype`` is not 'Task' is an Events record: only
  ``<Events prefix>x<id>`` reaches it and only ``FROM Events`` lists it.

vtiger 8.2 (recorded):

* Field names, types, mandatory flags and picklists are the recorded ``describe``
  (``VT82_DESCRIBE``); answers list the fields in that order; every value is a string
  ('' for an empty reference, '0' for an unset boolean).  ``listtypes`` is the recorded
  list.  ``login`` answers the user's name, e-mail, zone, formats and
  ``vtigerVersion`` 8.2.0.
* One live challenge token per user: a new ``getchallenge`` kills the previous one (two
  processes logging in as one user break each other).  ``getchallenge`` for an unknown
  user or without one answers ``ACCESS_DENIED``; ``login`` for an unknown user
  ``INVALID_AUTH_TOKEN``.
* ``sync`` (GET or POST, with or without ``syncType``), ``logout`` and an unknown
  operation answer HTTP 500 with an empty ``text/html; charset=UTF-8`` body (PHP 8
  named parameters); after the failed logout the session still works.  There is no
  ``login_pwd``.
* retrieve / revise / update / delete of a deleted or never-existing record:
  ``ACCESS_DENIED`` "Permission to perform the operation is denied"; a live record under
  another module's prefix: ``INVALID_ID_ATTRIBUTE`` "Id specified is incorrect"; an id
  without 'x' or with an unknown prefix: ``ACCESS_DENIED`` "Permission to perform the
  operation is denied for id".
* create: the mandatory fields of ``describe`` must be in the element (first missing
  one, in describe order: ``MANDATORY_FIELDS_MISSING`` "<field> does not have a
  value"): Events need ``duration_hours``, Calendar (tasks) ``time_start`` and
  ``due_date``.  A Calendar create without ``activitytype`` stores '' and so makes an
  Events record (create still answers with the Calendar prefix).  A task's
  ``duration_hours``/``duration_minutes``, when not sent, run from its start to 23:00 of
  ``due_date`` (as measured: 2027-01-20 08:30 → 2027-01-22: '62', '30').  An Events
  create without ``reminder_time`` stores a reminder of '0' (a task: '').
  ``contact_no`` is numbered CON1, CON2, …; API-made records have ``source``
  'WEBSERVICE' and ``starred`` '0', UI-made ones 'CRM' and ''.
* update merges (8.2): the fields not sent are kept, but every kept value is re-saved
  (after the answer, which still shows it as it was) HTML-entity-encoded as PHP ``htmlentities(ENT_QUOTES)`` does (``"`` → ``&quot;``,
  ``&`` → ``&amp;``, ``à`` → ``&agrave;``, ``€`` → ``&euro;``, ``'`` → ``&#039;``; an
  already encoded value is encoded again).  The recording shows it on ``description``;
  the other kept fields of that update held nothing to encode, so the fake encodes every
  kept value (a no-op for dates, numbers and ids).  The mandatory fields must still be
  in the element.  revise merges without encoding.
* Times and dates are stored and returned as written: 'HH:MM' from the API,
  'HH:MM:SS' after a UI save; dates yyyy-mm-dd (although describe says dd-mm-yyyy); no
  time-zone conversion for the API user (UTC in, UTC out).
* Contacts of an event (``vtiger_cntactivityrel``): the UI links several; retrieve's
  ``contact_id`` names the lowest contact id, query's the highest; any revise or update
  deletes all links and re-inserts one: the ``contact_id`` sent, else the one retrieve
  showed.  Not recorded, from vtiger's ``Activity::save_module``: a create, update or
  revise whose form also carries ``contactidlist`` ("id;id") gets exactly those links.
* ``salutationtype`` is typed string: the API stores any value ('Ing.'); the UI's
  select (``UI_SALUTATIONS``) lacks 'Ing.', so a UI save empties it.
* Recurrence: an API write stores ``recurringtype`` only (no recurrence rows).  A
  series saved in the UI is one record per occurrence, all at the first occurrence's
  UTC time (also across a DST change), each ``recurringtype`` = the type, with rows in
  ``vtiger_recurringevents`` and tied to the first in ``vtiger_activity_recurring_info``.

vtenext (from its sources, not measured):

* ``getchallenge`` keeps every live token of a user (and stores one for an unknown
  user); repeated wrong logins lock the account (``LOGIN_LOCKED``); ``login_pwd``
  exists; an unknown operation is ``UNKNOWN_OPERATION``; logout ends the session.
* ``sync`` runs but, as on vtiger, only ``modifiedTime`` and ``elementType`` reach it:
  ``syncType`` is never honoured and a page holds only the session user's own records.
  The first 100 modified times after ``modifiedTime`` decide the page's last second;
  the page holds *every* record (live or deleted) up to and including that second;
  ``more`` says whether anything is newer.
* retrieve / revise / update of a deleted or missing record: ``ACCESS_DENIED`` as on
  vtiger — the check that produces it (the record's entity type read with
  ``deleted=0``, then "not in the user's types") is in the vtiger 5 code vtenext
  derives from; delete of a missing id succeeds (crmv@2390m in vtenext's delete).
* vtenext keeps server-local time; a create/update/revise reads an event's
  date_start/time_start and due_date/time_end in the caller's zone and
  retrieve/create/revise answer them in it (shifted by the login's ``timezone``
  difference), while query and sync return them as stored; every read formats date
  fields in the caller's date format.  It takes ``invitees`` ([{email, partecipation}])
  on writes and never returns them.  A Calendar create is always a task.

``FakeCrm`` is the data and the operations; ``FakeCrmResource`` serves it; ``serve``
puts it on a loopback port of a reactor.  Run as a program (``python tests/fakecrm.py
--port 0 [--flavour vtiger]``) it also answers a JSON control API: ``POST /control``
``{"action": name, …}`` → ``{"result": …}`` (HTTP 400 ``{"error"}`` on a bad call).

Control actions (the same names are ``FakeCrm`` methods; ids are web-service ids
``<prefix>x<crmid>``, users are names):

* ``add_user`` name, access_key, password, is_admin, timezone, date_format, email,
  status, user_id, first_name, last_name, hour_format → user id.
* ``add_record`` module, fields, owner, modifiedtime → id; ``add_records`` the same
  with a list of field dicts; ``modify_record`` id, fields, modifiedtime;
  ``delete_record`` id, modifiedtime: direct writes in database form (dates
  yyyy-mm-dd, times as stored), no UI rules applied.
* ``record`` id → the stored record (database form, except that an event's
  ``contact_id`` is the web-service id retrieve names and ``contacts`` the web-service
  ids of all its contact links; before issue #9 ``contact_id`` was a bare crmid);
  ``live`` module, owner → the live records.
* ``set`` down, delay, http500_next, vtiger_sync_broken, fail_next, fail_ops (fault
  injection); ``expire_sessions`` code; ``calls``; ``now_local``.
* What the vtiger web UI does (user = the user saving in the UI, e.g. "mario"; forms in
  that user's date format and local time, as the Edit view shows them):

  - ``ui_edit_form`` module, user, record=None → the Edit view's form as the browser
    would post it unchanged ([name, value] pairs): local times with seconds,
    ``recurringtype`` '--None--' unless the record has recurrence rows (the repeat box
    is unticked for an API-made 'Weekly' event), ``contactidlist`` of every linked
    contact, reminder as ``set_reminder``/``remdays``/``remhrs``/``remmin``, a
    ``salutationtype`` outside ``UI_SALUTATIONS`` shown as '', empty support dates
    pre-filled with today and today + 1 year.
  - ``ui_save`` module, fields, user → ids: posts a form (pairs or a dict) as vtiger's
    Save action: local time → UTC, times saved 'HH:MM:SS', duration from start/end,
    tags stripped from text and CRLF → LF, ``contactidlist`` ("id;id") replaces the
    event's links, ``recurringtype`` as posted ('--None--' when the box is unticked),
    a ticked ``recurringcheck`` on a new event makes one record per occurrence
    (``<day>_flag`` fields, ``repeat_frequency``, ``calendar_repeat_limit_date``),
    reminder 0 unless ``set_reminder`` is ticked, ``modifiedby`` the UI user.
  - ``ui_save_event`` user, record=None, changes → ids: the Edit view's form with
    ``changes`` applied (form names; ``contact_id`` "id,id" or a list sets
    ``contactidlist``; ``recurringcheck`` / ``<day>_flag`` "checked" tick boxes), saved.
  - ``ui_save_contact`` user, record=None, changes → ids: the same for a contact.
  - ``ui_create_series`` user, subject, date_start, time_start, time_end, until,
    recurringtype='Weekly', frequency=1, weekdays=None (list like ["wed"]; default the
    start's day), changes → the ids of the occurrences.
  - ``ui_link_contacts`` user, record, contacts → ids: the UI edit of an event that
    links exactly ``contacts``.
  - ``table`` name → rows (strings) of the modelled MariaDB tables:
    ``vtiger_activity_reminder``, ``vtiger_recurringevents``,
    ``vtiger_activity_recurring_info``, ``vtiger_cntactivityrel``, ``vtiger_activity``
    (live records only).
  - ``update_user`` name, attributes: change a user (zone, date format, names, …).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from html.entities import codepoint2name
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from twisted.web import server
from twisted.web.resource import Resource

TOKEN_LIFE = 300
SESSION_IDLE = 1800
SESSION_LIFE = 86400
LOCK_AFTER = 5

GET_OPS = {"getchallenge", "describe", "query", "retrieve", "sync", "listtypes"}
POST_OPS = {"login", "login_pwd", "create", "update", "revise", "delete", "logout"}
PRELOGIN = {"getchallenge", "login", "login_pwd"}

DEFAULT_PREFIXES = {"Users": "33", "Accounts": "30", "Contacts": "31", "Calendar": "26",
                    "Events": "27"}
DENIED = "Permission to perform the operation is denied"

# vtenext: module -> field -> type (text, date, time, datetime, owner, reference:<module>,
# boolean, integer, picklist)
_COMMON = {"assigned_user_id": "owner", "createdtime": "datetime", "modifiedtime": "datetime",
           "description": "text"}
CONTACT_FIELDS = {
    "salutationtype": "picklist", "firstname": "text", "lastname": "text", "email": "email",
    "phone": "text", "mobile": "text", "homephone": "text", "otherphone": "text",
    "fax": "text", "assistant": "text", "assistantphone": "text", "title": "text",
    "department": "text", "account_id": "reference:Accounts", "birthday": "date",
    "mailingstreet": "text", "mailingcity": "text", "mailingstate": "text",
    "mailingzip": "text", "mailingcountry": "text", "mailingpobox": "text",
    "otherstreet": "text", "othercity": "text", "otherstate": "text", "otherzip": "text",
    "othercountry": "text", "otherpobox": "text", "imagename": "text",
    "contact_no": "text", **_COMMON,
}
EVENT_FIELDS = {
    "subject": "text", "date_start": "date", "time_start": "time", "due_date": "date",
    "time_end": "time", "duration_hours": "integer", "duration_minutes": "integer",
    "eventstatus": "picklist", "activitytype": "picklist", "location": "text",
    "visibility": "picklist", "recurringtype": "picklist", "reminder_time": "integer",
    "contact_id": "reference:Contacts", "parent_id": "reference:Accounts",
    "sendnotification": "boolean", "taskpriority": "picklist", **_COMMON,
}
TASK_FIELDS = {
    "subject": "text", "date_start": "date", "time_start": "time", "due_date": "date",
    "taskstatus": "picklist", "taskpriority": "picklist", "activitytype": "picklist",
    "contact_id": "reference:Contacts", "parent_id": "reference:Accounts",
    "sendnotification": "boolean", **_COMMON,
}
ACCOUNT_FIELDS = {"accountname": "text", **_COMMON}
USER_FIELDS = {"user_name": "text", "first_name": "text", "last_name": "text",
               "email1": "email", "is_admin": "text", "status": "text",
               "date_format": "text", "user_timezone": "text"}
MANDATORY = {
    "Contacts": ("lastname", "assigned_user_id"),
    "Events": ("subject", "assigned_user_id", "date_start", "time_start", "due_date",
               "time_end", "duration_hours", "eventstatus", "activitytype"),
    "Calendar": ("subject", "assigned_user_id", "date_start", "taskstatus"),
    "Accounts": ("accountname", "assigned_user_id"),
}
ACTIVITIES = ("Events", "Calendar")

# the vtiger 8.2 web UI: the options of the Contacts salutation select (recorded), the
# weekday check boxes of the repeat block (name prefix, value, Python weekday)
UI_SALUTATIONS = ("", "Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")
UI_WEEKDAYS = (("sun", "sunday", 6), ("mon", "monday", 0), ("tue", "tuesday", 1),
               ("wed", "wednesday", 2), ("thu", "thursday", 3), ("fri", "friday", 4),
               ("sat", "saturday", 5))
UI_RECURRING = ("Daily", "Weekly", "Monthly", "Yearly")

# vtiger 8.2.0 describe, as recorded: (name, label, mandatory, type, nullable, editable,
# default); type is the type name, or (name, detail) with detail the picklist values
# ((label, value) where they differ) and default value, the refersTo list or the date format.
VT82_DESCRIBE: dict[str, tuple[tuple[Any, ...], ...]] = {
    'Contacts': (
        ('salutationtype', 'Salutation', 0, 'string', 1, 1, ''),
        ('firstname', 'First Name', 0, 'string', 1, 1, ''),
        ('contact_no', 'Contact Id', 0, 'string', 0, 0, ''),
        ('phone', 'Office Phone', 0, 'phone', 1, 1, ''),
        ('lastname', 'Last Name', 1, 'string', 0, 1, ''),
        ('mobile', 'Mobile Phone', 0, 'phone', 1, 1, ''),
        ('account_id', 'Organization Name', 0, ('reference', ('Accounts',)), 1, 1, ''),
        ('homephone', 'Home Phone', 0, 'phone', 1, 1, ''),
        ('leadsource', 'Lead Source', 0,
         ('picklist',
          (['Cold Call', 'Existing Customer', 'Self Generated', 'Employee', 'Partner',
            'Public Relations', 'Direct Mail', 'Conference', 'Trade Show', 'Web Site',
            'Word of mouth', 'Other'],
           'Cold Call')),
         1, 1, ''),
        ('otherphone', 'Secondary Phone', 0, 'phone', 1, 1, ''),
        ('title', 'Title', 0, 'string', 1, 1, ''),
        ('fax', 'Fax', 0, 'phone', 1, 1, ''),
        ('department', 'Department', 0, 'string', 1, 1, ''),
        ('birthday', 'Date of Birth', 0, ('date', 'dd-mm-yyyy'), 1, 1, ''),
        ('email', 'Primary Email', 0, 'email', 1, 1, ''),
        ('contact_id', 'Reports To', 0, ('reference', ('Contacts',)), 1, 1, ''),
        ('assistant', 'Assistant', 0, 'string', 1, 1, ''),
        ('secondaryemail', 'Secondary Email', 0, 'email', 1, 1, ''),
        ('assistantphone', 'Assistant Phone', 0, 'phone', 1, 1, ''),
        ('donotcall', 'Do Not Call', 0, 'boolean', 1, 1, ''),
        ('emailoptout', 'Email Opt Out', 0, 'boolean', 1, 1, ''),
        ('assigned_user_id', 'Assigned To', 1, 'owner', 0, 1, ''),
        ('reference', 'Reference', 0, 'boolean', 1, 1, ''),
        ('notify_owner', 'Notify Owner', 0, 'boolean', 1, 1, ''),
        ('createdtime', 'Created Time', 0, 'datetime', 0, 0, ''),
        ('modifiedtime', 'Modified Time', 0, 'datetime', 0, 0, ''),
        ('modifiedby', 'Last Modified By', 0, ('reference', ('Users',)), 0, 1, ''),
        ('isconvertedfromlead', 'Is Converted From Lead', 0, 'boolean', 1, 1, 'no'),
        ('source', 'Source', 0, 'string', 1, 0, ''),
        ('starred', 'starred', 0, 'boolean', 1, 1, ''),
        ('tags', 'tags', 0, 'string', 1, 1, ''),
        ('portal', 'Portal User', 0, 'boolean', 1, 1, ''),
        ('support_start_date', 'Support Start Date', 0, ('date', 'dd-mm-yyyy'), 1, 1, ''),
        ('support_end_date', 'Support End Date', 0, ('date', 'dd-mm-yyyy'), 1, 1, ''),
        ('mailingstreet', 'Mailing Street', 0, 'text', 1, 1, ''),
        ('otherstreet', 'Other Street', 0, 'text', 1, 1, ''),
        ('mailingcity', 'Mailing City', 0, 'string', 1, 1, ''),
        ('othercity', 'Other City', 0, 'string', 1, 1, ''),
        ('mailingstate', 'Mailing State', 0, 'string', 1, 1, ''),
        ('otherstate', 'Other State', 0, 'string', 1, 1, ''),
        ('mailingzip', 'Mailing Zip', 0, 'string', 1, 1, ''),
        ('otherzip', 'Other Zip', 0, 'string', 1, 1, ''),
        ('mailingcountry', 'Mailing Country', 0, 'string', 1, 1, ''),
        ('othercountry', 'Other Country', 0, 'string', 1, 1, ''),
        ('mailingpobox', 'Mailing P.O. Box', 0, 'string', 1, 1, ''),
        ('otherpobox', 'Other P.O. Box', 0, 'string', 1, 1, ''),
        ('description', 'Description', 0, 'text', 1, 1, ''),
        ('imagename', 'Contact Image', 0, 'image', 1, 1, ''),
    ),
    'Events': (
        ('subject', 'Subject', 1, 'string', 1, 1, ''),
        ('assigned_user_id', 'Assigned To', 1, 'owner', 0, 1, ''),
        ('date_start', 'Start Date & Time', 1, ('date', 'dd-mm-yyyy'), 0, 1, ''),
        ('time_start', 'Time Start', 1, 'time', 1, 1, ''),
        ('due_date', 'End Date', 1, ('date', 'dd-mm-yyyy'), 1, 1, ''),
        ('time_end', 'End Time', 1, 'time', 1, 1, ''),
        ('recurringtype', 'Repeat', 0,
         ('picklist',
          ([('Day(s)', 'Daily'), ('Week(s)', 'Weekly'), ('Month(s)', 'Monthly'),
            ('Year', 'Yearly')],
           'Daily')),
         1, 1, ''),
        ('duration_hours', 'Duration', 1, 'integer', 1, 1, ''),
        ('duration_minutes', 'Duration Minutes', 0, ('picklist', (['00', '15', '30', '45'], '00')),
         1, 1, ''),
        ('parent_id', 'Related To', 0,
         ('reference',
          ('Accounts', 'Campaigns', 'HelpDesk', 'Invoice', 'Leads', 'Potentials', 'PurchaseOrder',
           'Quotes', 'SalesOrder')),
         0, 1, ''),
        ('eventstatus', 'Status', 1, ('picklist', (['Planned', 'Held', 'Not Held'], 'Planned')), 1,
         1, ''),
        ('sendnotification', 'Send Notification', 0, 'boolean', 0, 1, ''),
        ('activitytype', 'Activity Type', 1,
         ('picklist', (['Call', 'Meeting', 'Mobile Call'], 'Call')), 0, 1, ''),
        ('location', 'Location', 0, 'string', 1, 1, ''),
        ('createdtime', 'Created Time', 0, 'datetime', 0, 0, ''),
        ('modifiedtime', 'Modified Time', 0, 'datetime', 0, 0, ''),
        ('taskpriority', 'Priority', 0, ('picklist', (['High', 'Medium', 'Low'], 'High')), 1, 1,
         ''),
        ('notime', 'No Time', 0, 'boolean', 0, 1, ''),
        ('visibility', 'Visibility', 0, ('picklist', (['Private', 'Public'], 'Private')), 0, 1, ''),
        ('modifiedby', 'Last Modified By', 0, ('reference', ('Users',)), 0, 1, ''),
        ('description', 'Description', 0, 'text', 1, 1, ''),
        ('reminder_time', 'Send Reminder', 0, 'integer', 0, 1, ''),
        ('contact_id', 'Contact Name', 0, ('reference', ('Contacts',)), 0, 1, ''),
        ('source', 'Source', 0, 'string', 1, 0, ''),
        ('starred', 'starred', 0, 'boolean', 1, 1, ''),
        ('tags', 'tags', 0, 'string', 1, 1, ''),
    ),
    'Calendar': (
        ('subject', 'Subject', 1, 'string', 1, 1, ''),
        ('assigned_user_id', 'Assigned To', 1, 'owner', 0, 1, ''),
        ('date_start', 'Start Date & Time', 1, ('date', 'dd-mm-yyyy'), 0, 1, ''),
        ('time_start', 'Time Start', 1, 'time', 1, 1, ''),
        ('time_end', 'End Time', 0, 'time', 1, 1, ''),
        ('due_date', 'Due Date', 1, ('date', 'dd-mm-yyyy'), 1, 1, ''),
        ('parent_id', 'Related To', 0,
         ('reference',
          ('Accounts', 'Campaigns', 'HelpDesk', 'Invoice', 'Leads', 'Potentials', 'PurchaseOrder',
           'Quotes', 'SalesOrder')),
         0, 1, ''),
        ('contact_id', 'Contact Name', 0, ('reference', ('Contacts',)), 0, 1, ''),
        ('taskstatus', 'Status', 1,
         ('picklist',
          (['Not Started', 'In Progress', 'Completed', 'Pending Input', 'Deferred', 'Planned'],
           'Not Started')),
         1, 1, ''),
        ('eventstatus', 'Status', 0, ('picklist', (['Planned', 'Held', 'Not Held'], 'Planned')), 1,
         1, ''),
        ('taskpriority', 'Priority', 0, ('picklist', (['High', 'Medium', 'Low'], 'High')), 1, 1,
         ''),
        ('sendnotification', 'Send Notification', 0, 'boolean', 0, 1, ''),
        ('createdtime', 'Created Time', 0, 'datetime', 0, 0, ''),
        ('modifiedtime', 'Modified Time', 0, 'datetime', 0, 0, ''),
        ('activitytype', 'Activity Type', 0,
         ('picklist', (['Call', 'Meeting', 'Mobile Call'], 'Call')), 0, 1, ''),
        ('visibility', 'Visibility', 0, ('picklist', (['Private', 'Public'], 'Private')), 0, 1, ''),
        ('description', 'Description', 0, 'text', 1, 1, ''),
        ('duration_hours', 'Duration', 0, 'time', 1, 1, ''),
        ('duration_minutes', 'Duration Minutes', 0, ('picklist', (['00', '15', '30', '45'], '00')),
         1, 1, ''),
        ('location', 'Location', 0, 'string', 1, 1, ''),
        ('reminder_time', 'Send Reminder', 0, 'integer', 0, 1, ''),
        ('recurringtype', 'Repeat', 0,
         ('picklist',
          ([('Day(s)', 'Daily'), ('Week(s)', 'Weekly'), ('Month(s)', 'Monthly'),
            ('Year', 'Yearly')],
           'Daily')),
         1, 1, ''),
        ('notime', 'No Time', 0, 'boolean', 0, 1, ''),
        ('modifiedby', 'Last Modified By', 0, ('reference', ('Users',)), 0, 1, ''),
        ('source', 'Source', 0, 'string', 1, 0, ''),
        ('starred', 'starred', 0, 'boolean', 1, 1, ''),
        ('tags', 'tags', 0, 'string', 1, 1, ''),
    ),
    'Users': (
        ('user_name', 'User Name', 1, 'string', 1, 1, ''),
        ('is_admin', 'Admin', 0, 'boolean', 1, 1, ''),
        ('user_password', 'Password', 1, 'password', 1, 1, ''),
        ('confirm_password', 'Confirm Password', 1, 'password', 1, 1, ''),
        ('first_name', 'First Name', 0, 'string', 1, 1, ''),
        ('last_name', 'Last Name', 1, 'string', 1, 1, ''),
        ('roleid', 'Role', 1, ('reference', ()), 0, 1, ''),
        ('email1', 'Primary Email', 1, 'email', 1, 1, ''),
        ('status', 'Status', 0, 'string', 1, 1, 'Active'),
        ('activity_view', 'Default MyCalendar View', 0,
         ('picklist', (['Today', 'This Week', 'This Month', 'This Year', 'Agenda'], 'Today')), 1,
         1, ''),
        ('lead_view', 'Default Lead View', 0,
         ('picklist', (['Today', 'Last 2 Days', 'Last Week'], 'Today')), 1, 1, ''),
        ('hour_format', 'Calendar Hour Format', 0, ('picklist', (['12', '24'], '12')), 1, 1, '12'),
        ('end_hour', 'Day ends at', 0, 'string', 1, 1, ''),
        ('start_hour', 'Day starts at', 0,
         ('picklist',
          (['00:00', '01:00', '02:00', '03:00', '04:00', '05:00', '06:00', '07:00', '08:00',
            '09:00', '10:00', '11:00', '12:00', '13:00', '14:00', '15:00', '16:00', '17:00',
            '18:00', '19:00', '20:00', '21:00', '22:00', '23:00'],
           '00:00')),
         1, 1, ''),
        ('is_owner', 'Account Owner', 0, 'string', 1, 1, '0'),
        ('title', 'Title', 0, 'string', 1, 1, ''),
        ('phone_work', 'Office Phone', 0, 'phone', 1, 1, ''),
        ('department', 'Department', 0, 'string', 1, 1, ''),
        ('phone_mobile', 'Mobile Phone', 0, 'phone', 1, 1, ''),
        ('reports_to_id', 'Reports To', 0, ('reference', ('Users',)), 1, 1, ''),
        ('phone_other', 'Secondary Phone', 0, 'phone', 1, 1, ''),
        ('email2', 'Other Email', 0, 'email', 1, 1, ''),
        ('phone_fax', 'Fax', 0, 'phone', 1, 1, ''),
        ('secondaryemail', 'Secondary Email', 0, 'email', 1, 1, ''),
        ('phone_home', 'Home Phone', 0, 'phone', 1, 1, ''),
        ('date_format', 'Date Format', 0,
         ('picklist',
          (['dd-mm-yyyy', 'mm-dd-yyyy', 'yyyy-mm-dd', 'dd.mm.yyyy', 'dd/mm/yyyy'], 'dd-mm-yyyy')),
         1, 1, ''),
        ('signature', 'Signature', 0, 'text', 1, 1, ''),
        ('description', 'Documents', 0, 'text', 1, 1, ''),
        ('address_street', 'Street Address', 0, 'text', 1, 1, ''),
        ('address_city', 'City', 0, 'string', 1, 1, ''),
        ('address_state', 'State', 0, 'string', 1, 1, ''),
        ('address_postalcode', 'Postal Code', 0, 'string', 1, 1, ''),
        ('address_country', 'Country', 0, 'string', 1, 1, ''),
        ('accesskey', 'Access Key', 0, 'autogenerated', 1, 0, ''),
        ('time_zone', 'Time Zone', 0,
         ('picklist',
          ([('(UTC-11:00) Samoa', 'Pacific/Samoa'),
            ('(UTC-11:00) Coordinated Universal Time-11', 'Pacific/Midway'),
            ('(UTC-10:00) Hawaii', 'Pacific/Honolulu'),
            ('(UTC-09:00) Alaska', 'America/Anchorage'),
            ('(UTC-08:00) Tijuana, Baja California', 'America/Tijuana'),
            ('(UTC-08:00) Pacific Time (US &amp; Canada)', 'America/Los_Angeles'),
            ('(UTC-07:00) Mountain Time (US &amp; Canada)', 'America/Denver'),
            ('(UTC-07:00) Mazatlan', 'America/Mazatlan'),
            ('(UTC-07:00) Chihuahua, La Paz, Mazatlan', 'America/Chihuahua'),
            ('(UTC-07:00) Arizona', 'America/Phoenix'),
            ('(UTC-06:00) Saskatchewan', 'America/Regina'),
            ('(UTC-06:00) Monterrey', 'America/Monterrey'),
            ('(UTC-06:00) Mexico City', 'America/Mexico_City'),
            ('(UTC-06:00) Central Time (US &amp; Canada)', 'America/Chicago'),
            ('(UTC-06:00) Central America', 'America/Tegucigalpa'),
            ('(UTC-05:00) Rio Branco', 'America/Rio_Branco'), ('(UTC-05:00) Lima', 'America/Lima'),
            ('(UTC-05:00) Indiana (East)', 'America/Indiana/Indianapolis'),
            ('(UTC-05:00) Eastern Time (US &amp; Canada)', 'America/New_York'),
            ('(UTC-05:00) Bogota, Lima, Quito', 'America/Bogota'),
            ('(UTC-04:30) Caracas', 'America/Caracas'),
            ('(UTC-04:00) Santiago', 'America/Santiago'), ('(UTC-04:00) Manaus', 'America/Manaus'),
            ('(UTC-04:00) La Paz', 'America/La_Paz'), ('(UTC-04:00) Cuiaba', 'America/Cuiaba'),
            ('(UTC-04:00) Atlantic Time (Canada)', 'America/Halifax'),
            ('(UTC-04:00) Asuncion', 'America/Asuncion'),
            ('(UTC-03:30) Newfoundland', 'America/St_Johns'),
            ('(UTC-03:00) Montevideo', 'America/Montevideo'),
            ('(UTC-03:00) Greenland', 'America/Godthab'),
            ('(UTC-03:00) Buenos Aires', 'America/Argentina/Buenos_Aires'),
            ('(UTC-03:00) Brasilia', 'America/Sao_Paulo'),
            ('(UTC-02:00) Mid-Atlantic', 'Atlantic/South_Georgia'),
            ('(UTC-01:00) Cape Verde Is.', 'Atlantic/Cape_Verde'),
            ('(UTC-01:00) Azores', 'Atlantic/Azores'), ('(UTC) Casablanca', 'Africa/Casablanca'),
            ('(UTC) Coordinated Universal Time, Greenwich Mean Time', 'UTC'),
            ('(UTC) London, Edinburgh, Dublin, Lisbon', 'Europe/London'),
            ('(UTC) Monrovia, Reykjavik', 'Africa/Monrovia'),
            ('(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna', 'Europe/Amsterdam'),
            ('(UTC+01:00) Belgrade, Bratislava, Budapest, Ljubljana, Prague', 'Europe/Belgrade'),
            ('(UTC+01:00) Brussels, Copenhagen, Madrid, Paris', 'Europe/Brussels'),
            ('(UTC+01:00) Sarajevo, Skopje, Warsaw, Zagreb', 'Europe/Sarajevo'),
            ('(UTC+01:00) West Central Africa', 'Africa/Algiers'),
            ('(UTC+02:00) Amman', 'Asia/Amman'),
            ('(UTC+02:00) Athens, Bucharest', 'Europe/Athens'),
            ('(UTC+02:00) Beirut', 'Asia/Beirut'), ('(UTC+02:00) Cairo', 'Africa/Cairo'),
            ('(UTC+02:00) Harare', 'Africa/Harare'),
            ('(UTC+02:00) Helsinki, Riga, Sofia, Tallinn, Vilnius', 'Europe/Helsinki'),
            ('(UTC+02:00) Istanbul', 'Europe/Istanbul'),
            ('(UTC+02:00) Jerusalem', 'Asia/Jerusalem'), ('(UTC+02:00) Minsk', 'Europe/Minsk'),
            ('(UTC+02:00) Windhoek', 'Africa/Windhoek'), ('(UTC+03:00) Baghdad', 'Asia/Baghdad'),
            ('(UTC+03:00) Kuwait, Riyadh', 'Asia/Kuwait'),
            ('(UTC+03:00) Moscow, Volgograd', 'Europe/Moscow'),
            ('(UTC+03:00) Nairobi', 'Africa/Nairobi'), ('(UTC+03:30) Tehran', 'Asia/Tehran'),
            ('(UTC+04:00) Abu Dhabi, Muscat', 'Asia/Muscat'), ('(UTC+04:00) Baku', 'Asia/Baku'),
            ('(UTC+04:00) Tbilisi', 'Asia/Tbilisi'), ('(UTC+04:00) Yerevan', 'Asia/Yerevan'),
            ('(UTC+05:00) Islamabad, Karachi', 'Asia/Karachi'),
            ('(UTC+05:00) Tashkent', 'Asia/Tashkent'),
            ('(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi', 'Asia/Kolkata'),
            ('(UTC+05:30) Sri Jayawardenepura', 'Asia/Colombo'),
            ('(UTC+05:45) Kathmandu', 'Asia/Katmandu'), ('(UTC+06:00) Almaty', 'Asia/Almaty'),
            ('(UTC+06:00) Dhaka', 'Asia/Dhaka'),
            ('(UTC+06:00) Ekaterinburg', 'Asia/Yekaterinburg'),
            ('(UTC+06:30) Yangon (Rangoon)', 'Asia/Rangoon'),
            ('(UTC+07:00) Bangkok, Jakarta', 'Asia/Bangkok'),
            ('(UTC+07:00) Novosibirsk', 'Asia/Novosibirsk'),
            ('(UTC+08:00) Beijing, Chongqing, Hong Kong, Urumqi', 'Asia/Brunei'),
            ('(UTC+08:00) Krasnoyarsk', 'Asia/Krasnoyarsk'),
            ('(UTC+08:00) Kuala Lumpur, Singapore', 'Asia/Kuala_Lumpur'),
            ('(UTC+08:00) Perth', 'Australia/Perth'), ('(UTC+08:00) Taipei', 'Asia/Taipei'),
            ('(UTC+08:00) Ulaan Bataar', 'Asia/Ulaanbaatar'),
            ('(UTC+09:00) Irkutsk', 'Asia/Irkutsk'), ('(UTC+09:00) Seoul', 'Asia/Seoul'),
            ('(UTC+09:00) Tokyo', 'Asia/Tokyo'), ('(UTC+09:30) Adelaide', 'Australia/Adelaide'),
            ('(UTC+09:30) Darwin', 'Australia/Darwin'),
            ('(UTC+10:00) Brisbane', 'Australia/Brisbane'),
            ('(UTC+10:00) Canberra, Melbourne, Sydney', 'Australia/Canberra'),
            ('(UTC+10:00) Guam, Port Moresby', 'Pacific/Guam'),
            ('(UTC+10:00) Hobart', 'Australia/Hobart'),
            ('(UTC+10:00) Vladivostok', 'Asia/Vladivostok'),
            ('(UTC+10:00) Yakutsk', 'Asia/Yakutsk'),
            ('(UTC+11:00) Solomon Is., New Caledonia', 'Etc/GMT-11'),
            ('(UTC+12:00) Auckland', 'Pacific/Auckland'), ('(UTC+12:00) Fiji', 'Pacific/Fiji'),
            ('(UTC+12:00) Kamchatka', 'Asia/Kamchatka'), ('(UTC+12:00) Magadan', 'Asia/Magadan'),
            ('(UTC+13:00) Nukualofa', 'Pacific/Tongatapu')],
           'Pacific/Samoa')),
         1, 1, ''),
        ('currency_id', 'Currency', 0, ('reference', ('Currency',)), 0, 1, ''),
        ('currency_grouping_pattern', 'Digit Grouping Pattern', 0,
         ('picklist', (['123,456,789', '123456789', '123456,789', '12,34,56,789'], '123,456,789')),
         1, 1, ''),
        ('currency_decimal_separator', 'Decimal Separator', 0,
         ('picklist', (['.', ',', "'", ' ', '$'], '.')), 1, 1, '.'),
        ('currency_grouping_separator', 'Digit Grouping Separator', 0,
         ('picklist', ([',', '.', "'", ' ', '$'], ',')), 1, 1, ','),
        ('currency_symbol_placement', 'Symbol Placement', 0,
         ('picklist', (['$1.0', '1.0$'], '$1.0')), 1, 1, ''),
        ('imagename', 'User Image', 0, 'string', 1, 1, ''),
        ('internal_mailer', 'Internal Mail Composer', 0, 'boolean', 0, 1, ''),
        ('theme', 'Theme', 0, 'string', 1, 1, 'softed'),
        ('language', 'Language', 0, 'string', 1, 1, 'en_us'),
        ('reminder_interval', 'Popup Reminder Interval', 0,
         ('picklist',
          (['1 Minute', '5 Minutes', '15 Minutes', '30 Minutes', '45 Minutes', '1 Hour', '1 Day'],
           '1 Minute')),
         1, 1, ''),
        ('phone_crm_extension', 'CRM Phone Extension', 0, 'phone', 1, 1, ''),
        ('no_of_currency_decimals', 'Number Of Currency Decimals', 0,
         ('picklist', (['0', '1', '2', '3', '4', '5'], '0')), 1, 1, '2'),
        ('truncate_trailing_zeros', 'Truncate Trailing Zeros', 0, 'boolean', 1, 1, '0'),
        ('dayoftheweek', 'Starting Day of the week', 0,
         ('picklist',
          (['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'],
           'Sunday')),
         1, 1, 'Monday'),
        ('callduration', 'Default Call Duration (Mins)', 0,
         ('picklist', (['5', '10', '30', '60', '120'], '5')), 1, 1, '5'),
        ('othereventduration', 'Other Event Duration (Mins)', 0,
         ('picklist', (['5', '10', '30', '60', '120'], '5')), 1, 1, '5'),
        ('calendarsharedtype', 'Calendar Shared Type', 0,
         ('picklist',
          ([('shared', 'public'), ('private', 'private'), ('seletedusers', 'seletedusers')],
           'public')),
         1, 1, 'Public'),
        ('default_record_view', 'Default Record View', 0,
         ('picklist', (['Summary', 'Detail'], 'Summary')), 1, 1, 'Summary'),
        ('leftpanelhide', 'Left Panel Hide', 0, 'boolean', 1, 1, '0'),
        ('rowheight', 'Row Height', 0, ('picklist', (['wide', 'medium', 'narrow'], 'wide')), 1, 1,
         'medium'),
        ('defaulteventstatus', 'Default Event Status', 0,
         ('picklist', (['Planned', 'Held', 'Not Held'], 'Planned')), 1, 1, 'Planned'),
        ('defaultactivitytype', 'Default Activity Type', 0,
         ('picklist', (['Call', 'Meeting'], 'Call')), 1, 1, 'Call'),
        ('hidecompletedevents', 'Hide Completed Calendar Events', 0, 'boolean', 1, 1, '0'),
        ('defaultcalendarview', 'Default Calendar View', 0,
         ('picklist',
          ([('List View', 'ListView'), ('My Calendar', 'MyCalendar'),
            ('Shared Calendar', 'SharedCalendar')],
           'ListView')),
         1, 1, 'MyCalendar'),
        ('defaultlandingpage', 'Default Landing Page', 0, 'string', 1, 1, 'Home'),
        ('userlabel', 'User Label', 0, 'string', 1, 1, ''),
    ),
}
VT82_ID_LABEL = {'Contacts': 'contactid', 'Events': 'activityid', 'Calendar': 'activityid', 'Users': 'id'}
# listtypes of vtiger 8.2.0 as recorded: (name, label, singular, isEntity)
VT82_TYPES = (
    ('Campaigns', 'Campaigns', 'Campaign', True),
    ('Vendors', 'Vendors', 'Vendor', True),
    ('Faq', 'FAQ', 'FAQ', True),
    ('Quotes', 'Quotes', 'Quote', True),
    ('PurchaseOrder', 'Purchase Orders', 'Purchase Order', True),
    ('SalesOrder', 'Sales Orders', 'Sales Order', True),
    ('Invoice', 'Invoices', 'Invoice', True),
    ('PriceBooks', 'Price Books', 'Price Book', True),
    ('Calendar', 'Calendar', 'Task', True),
    ('Leads', 'Leads', 'Lead', True),
    ('Accounts', 'Organizations', 'Organization', True),
    ('Contacts', 'Contacts', 'Contact', True),
    ('Potentials', 'Opportunities', 'Opportunity', True),
    ('Products', 'Products', 'Product', True),
    ('Documents', 'Documents', 'Document', True),
    ('Emails', 'Emails', 'Email', True),
    ('HelpDesk', 'Tickets', 'Ticket', True),
    ('Events', 'Events', 'Event', True),
    ('Users', 'Users', 'User', True),
    ('PBXManager', 'PBX Manager', 'Call Record', True),
    ('ServiceContracts', 'Service Contracts', 'Service Contract', True),
    ('Services', 'Services', 'Service', True),
    ('ProjectMilestone', 'Project Milestones', 'Project Milestone', True),
    ('ProjectTask', 'Project Tasks', 'Project Task', True),
    ('Project', 'Projects', 'Project', True),
    ('ModComments', 'Comments', 'Comment', True),
    ('SMSNotifier', 'SMS Notifier', 'SMS Notifier', True),
    ('Assets', 'Assets', 'Asset', True),
    ('Groups', 'Groups', 'Groups', False),
    ('Currency', 'Currency', 'Currency', False),
    ('DocumentFolders', 'DocumentFolders', 'DocumentFolders', False),
    ('CompanyDetails', 'CompanyDetails', 'CompanyDetails', False),
    ('LineItem', 'LineItem', 'LineItem', False),
    ('Tax', 'Tax', 'Tax', False),
    ('ProductTaxes', 'ProductTaxes', 'ProductTaxes', False),
)


@functools.cache
def _vt82_fields(module: str) -> dict[str, str]:
    """Field name → the fake's type, of a module of the recorded vtiger 8.2 describe
    (static data, worked out once: a query's WHERE looks types up for every record;
    callers get a copy)."""
    return {f[0]: _vt_type(f[3]) for f in VT82_DESCRIBE[module]}


def _vt_type(ty: Any) -> str:
    """The fake's field type for a recorded describe type."""
    name = ty if isinstance(ty, str) else ty[0]
    if name == "reference":
        return f"reference:{ty[1][0] if ty[1] else 'Users'}"
    if name in ("string", "phone", "image", "password", "text"):
        return "text"
    return str(name)


def html_entities(text: str) -> str:
    """PHP ``htmlentities($text, ENT_QUOTES)`` (HTML 4 named entities, ' as &#039;)."""
    out = []
    for ch in text:
        if ch == "'":
            out.append("&#039;")
        elif ord(ch) in codepoint2name:
            out.append(f"&{codepoint2name[ord(ch)]};")
        else:
            out.append(ch)
    return "".join(out)


class WsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Http500(Exception):
    """Answer HTTP 500 with ``body`` as text/html (a PHP error in the CRM)."""

    def __init__(self, what: str = "", body: bytes | None = None) -> None:
        super().__init__(what)
        self.body = PHP_FATAL if body is None else body


PHP_FATAL = (b"<br />\n<b>Fatal error</b>:  Uncaught TypeError: count(): Argument #1 "
             b"($value) must be of type Countable|array, null given in "
             b"/var/www/html/include/Webservices/GetUpdates.php:47<br />")


def _clean_ws_id(value: Any) -> tuple[str, int] | None:
    text = str(value or "").strip().strip("'\"")
    prefix, sep, num = text.partition("x")
    if not sep or not prefix.isdigit() or not num.isdigit():
        return None
    return prefix, int(num)


def _pairs(fields: Any) -> list[tuple[str, str]]:
    if isinstance(fields, dict):
        return [(str(k), "" if v is None else str(v)) for k, v in fields.items()]
    return [(str(k), "" if v is None else str(v)) for k, v in fields]


class FakeCrm:
    """The CRM's data and web-service operations (no HTTP here)."""

    def __init__(self, flavour: str = "vtenext", *, clock: Callable[[], float] | None = None,
                 server_tz: str | None = None, prefixes: dict[str, str] | None = None,
                 admin_key: str = "adminKEY123", admin_tz: str | None = None,
                 admin_date_format: str = "yyyy-mm-dd") -> None:
        if flavour not in ("vtenext", "vtiger"):
            raise ValueError(flavour)
        self.flavour = flavour
        self.clock = clock or time.time
        # vtiger keeps UTC in the database; vtenext the server's $default_timezone
        self.server_tz = "UTC" if flavour == "vtiger" else (server_tz or "Europe/Rome")
        self.prefixes = dict(DEFAULT_PREFIXES, **(prefixes or {}))
        self.by_prefix = {v: k for k, v in self.prefixes.items() if k != "Events"}
        self.users: dict[int, dict[str, Any]] = {}
        self.records: dict[int, dict[str, Any]] = {}
        self.tokens: dict[int, list[tuple[str, float]]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.failed_logins: Counter[int] = Counter()
        self.next_id = 100
        self.next_contact_no = 1
        # vtiger_activity_recurring_info: (first occurrence, occurrence)
        self.recurring_info: list[tuple[int, int]] = []
        # fault injection
        self.down = False                   # connections are dropped
        self.delay = 0.0                    # seconds before each answer
        self.fail_next: list[tuple[str, str]] = []   # error envelopes for the next calls
        self.fail_ops: set[str] | None = None        # ...only for these operations
        self.http500_next = 0               # PHP fatal pages for the next calls
        self.vtiger_sync_broken = False     # vtenext's sync answers HTTP 500 too
        # what happened
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, Any]]] = []
        self._request: dict[str, str] = {}          # $_REQUEST of the running call
        self.admin_id = self.add_user("admin", access_key=admin_key, password="admin-pw",
                                      is_admin=True, timezone=admin_tz or self.server_tz,
                                      date_format=admin_date_format,
                                      last_name="Administrator")

    # -- set-up and direct access ------------------------------------------------------
    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_user(self, name: str, *, access_key: str | None = None,
                 password: str | None = None, is_admin: bool = False,
                 timezone: str | None = None, date_format: str = "yyyy-mm-dd",
                 email: str | None = None, status: str = "Active",
                 user_id: int | None = None, first_name: str | None = None,
                 last_name: str = "User", hour_format: str = "24") -> int:
        uid = user_id if user_id is not None else max(self.users, default=0) + 1
        if uid in self.users:
            raise ValueError(f"user id {uid} exists")
        self.users[uid] = {
            "user_name": name, "accesskey": access_key or uuid.uuid4().hex[:16],
            "password": password, "is_admin": "on" if is_admin else "off",
            "user_timezone": timezone or self.server_tz, "date_format": date_format,
            "email1": email or f"{name}@crm.example",
            "first_name": name.title() if first_name is None else first_name,
            "last_name": last_name, "status": status, "hour_format": hour_format,
        }
        return uid

    def update_user(self, name: str, **attrs: Any) -> None:
        """Change a user's attributes (timezone, date_format, email, first_name, …)."""
        user = self.users[self.user_id(name)]
        renames = {"timezone": "user_timezone", "email": "email1", "access_key": "accesskey"}
        for key, value in attrs.items():
            key = renames.get(key, key)
            if key == "is_admin":
                value = "on" if value in (True, "on") else "off"
            if key not in user:
                raise KeyError(key)
            user[key] = value

    def user_id(self, name: str) -> int:
        for uid, u in self.users.items():
            if u["user_name"].lower() == name.lower():
                return uid
        raise KeyError(name)

    def ws_id(self, module: str, crmid: int) -> str:
        return f"{self.prefixes[module]}x{crmid}"

    def now_local(self) -> str:
        dt = datetime.fromtimestamp(self.clock(), UTC).astimezone(ZoneInfo(self.server_tz))
        return dt.strftime("%Y-%m-%d %H:%M:%S")

    def _new_rec(self, module: str, owner: int, source: str, by: int,
                 stamp: str | None = None) -> dict[str, Any]:
        stamp = stamp or self.now_local()
        return {"module": module, "fields": {}, "owner": owner, "deleted": False,
                "createdtime": stamp, "modifiedtime": stamp, "invitees": [],
                "contacts": [], "modifiedby": by, "source": source,
                "starred": "0" if source == "WEBSERVICE" else "", "recurring": None}

    def _number(self, rec: dict[str, Any]) -> None:
        if rec["module"] == "Contacts" and not rec["fields"].get("contact_no"):
            rec["fields"]["contact_no"] = f"CON{self.next_contact_no}"
            self.next_contact_no += 1

    def add_record(self, module: str, fields: dict[str, Any], owner: int | str | None = None,
                   modifiedtime: str | None = None) -> str:
        """Store a record directly (fields in database form: dates Y-m-d, times as
        stored — server-local on vtenext, UTC on vtiger).  Returns its web-service id."""
        owner_id = self._owner(owner)
        rec = self._new_rec(module, owner_id, "CRM", owner_id, modifiedtime)
        if module == "Calendar":
            rec["fields"]["activitytype"] = "Task"
        for k, v in fields.items():
            self._set_field(rec, k, v)
        self._number(rec)
        crmid = self._new_id()
        self.records[crmid] = rec
        return self.ws_id(module, crmid)

    def modify_record(self, ws_id: str, fields: dict[str, Any],
                      modifiedtime: str | None = None) -> None:
        rec = self._record(ws_id)
        for k, v in fields.items():
            self._set_field(rec, k, v)
        rec["modifiedtime"] = modifiedtime or self.now_local()

    def delete_record(self, ws_id: str, modifiedtime: str | None = None) -> None:
        rec = self._record(ws_id)
        rec["deleted"] = True
        rec["modifiedtime"] = modifiedtime or self.now_local()

    def record(self, ws_id: str) -> dict[str, Any]:
        """The stored record (database form) with owner, deleted, invitees, contacts."""
        parsed = _clean_ws_id(ws_id)
        rec = self._record(ws_id, live_only=False)
        assert parsed is not None
        out = dict(rec["fields"])
        if rec["module"] in ACTIVITIES:
            out["contact_id"] = self._contact_ref(rec, "retrieve")
        elif "contact_id" in out:
            out["contact_id"] = self._ref("Contacts", out["contact_id"])
        out.update(id=ws_id, owner=self.users[rec["owner"]]["user_name"],
                   deleted=rec["deleted"], modifiedtime=rec["modifiedtime"],
                   invitees=[dict(i) for i in rec["invitees"]],
                   contacts=[self.ws_id("Contacts", c) for c in rec["contacts"]])
        return out

    def live(self, module: str, owner: str | None = None) -> list[dict[str, Any]]:
        out = []
        for crmid, rec in sorted(self.records.items()):
            if rec["deleted"] or self._effective(rec) != module:
                continue
            if owner is not None and self.users[rec["owner"]]["user_name"] != owner:
                continue
            out.append(self.record(self.ws_id(module, crmid)))
        return out

    def expire_sessions(self, code: str = "INVALID_SESSIONID") -> None:
        for s in self.sessions.values():
            s["dead"] = code

    def table(self, name: str) -> list[dict[str, str]]:
        """Rows of a modelled MariaDB table, values as strings, live records only."""
        out: list[dict[str, str]] = []
        live = {c: r for c, r in sorted(self.records.items()) if not r["deleted"]}
        if name == "vtiger_activity_reminder":
            for crmid, rec in live.items():
                if rec["module"] in ACTIVITIES and rec["fields"].get("reminder_time", "") != "":
                    out.append({"activity_id": str(crmid),
                                "reminder_time": rec["fields"]["reminder_time"],
                                "reminder_sent": "0", "recurringid": "0"})
        elif name == "vtiger_recurringevents":
            for crmid, rec in live.items():
                r = rec.get("recurring")
                if r:
                    out.append({"activityid": str(crmid), "recurringdate": r["date"],
                                "recurringtype": r["type"], "recurringfreq": str(r["freq"]),
                                "recurringinfo": r["info"], "recurringenddate": r["end"]})
        elif name == "vtiger_activity_recurring_info":
            out = [{"activityid": str(a), "recurrenceid": str(b)}
                   for a, b in self.recurring_info if a in live and b in live]
        elif name == "vtiger_cntactivityrel":
            for crmid, rec in live.items():
                for contact in sorted(rec["contacts"]):
                    out.append({"contactid": str(contact), "activityid": str(crmid)})
        elif name == "vtiger_activity":
            for crmid, rec in live.items():
                if rec["module"] in ACTIVITIES:
                    f = rec["fields"]
                    out.append({"activityid": str(crmid), **{
                        k: str(f.get(k, "")) for k in ("subject", "activitytype", "date_start",
                                                       "time_start", "due_date", "time_end")}})
        else:
            raise KeyError(name)
        return out

    def _owner(self, owner: int | str | None) -> int:
        if owner is None:
            return self.admin_id
        if isinstance(owner, int):
            return owner
        parsed = _clean_ws_id(owner)
        if parsed:
            return parsed[1]
        if str(owner).isdigit():
            return int(owner)
        return self.user_id(owner)

    def _record(self, ws_id: str, live_only: bool = True) -> dict[str, Any]:
        parsed = _clean_ws_id(ws_id)
        rec = self.records.get(parsed[1]) if parsed else None
        if rec is None or (live_only and rec["deleted"]):
            raise KeyError(ws_id)
        return rec

    @staticmethod
    def _effective(rec: dict[str, Any]) -> str:
        """The module a record answers to: a Calendar record that is not a Task is an
        Events record."""
        if rec["module"] in ACTIVITIES:
            return "Calendar" if rec["fields"].get("activitytype") == "Task" else "Events"
        return str(rec["module"])

    def _fields(self, module: str) -> dict[str, str]:
        if self.flavour == "vtiger" and module in VT82_DESCRIBE and module != "Users":
            return dict(_vt82_fields(module))
        if module == "Contacts":
            f = dict(CONTACT_FIELDS)
            f["yahooid" if self.flavour == "vtenext" else "secondaryemail"] = "email"
            return f
        if module == "Events":
            f = dict(EVENT_FIELDS)
            if self.flavour == "vtenext":
                f.update(is_all_day_event="boolean", ical_uuid="text")
            return f
        if module == "Calendar":
            return dict(TASK_FIELDS)
        if module == "Accounts":
            return dict(ACCOUNT_FIELDS)
        if module == "Users":
            f = dict(USER_FIELDS)
            if self.flavour == "vtiger":
                f["time_zone"] = f.pop("user_timezone")
            return f
        if self.flavour == "vtiger":
            raise WsError("ACCESS_DENIED", DENIED + " for name")
        raise WsError("ACCESS_DENIED", DENIED)

    def _mandatory(self, module: str) -> tuple[str, ...]:
        if self.flavour == "vtiger" and module in VT82_DESCRIBE:
            return tuple(f[0] for f in VT82_DESCRIBE[module] if f[2])
        return MANDATORY.get(module, ())

    def _set_field(self, rec: dict[str, Any], name: str, value: Any) -> None:
        if name == "assigned_user_id":
            rec["owner"] = self._owner(value)
            return
        if name in ("id", "modifiedtime", "createdtime", "modifiedby", "source", "label"):
            return
        if name == "starred":
            rec["starred"] = "" if value is None else str(value)
            return
        module = rec["module"]
        ftype = self._fields(module).get(name)
        if ftype is None and module == "Calendar":
            ftype = self._fields("Events").get(name)
        if ftype is None:
            return                      # unknown fields are ignored by the CRM
        if ftype.startswith("reference:"):
            parsed = _clean_ws_id(value)
            if parsed is None and str(value or "").isdigit() and int(value):
                parsed = ("", int(value))
            if name == "contact_id" and module in ACTIVITIES:
                rec["contacts"] = [parsed[1]] if parsed else []
                return
            rec["fields"][name] = parsed[1] if parsed else None
            return
        rec["fields"][name] = "" if value is None else str(value)

    # -- the web-service operations --------------------------------------------------
    def handle(self, method: str, query: dict[str, str], form: dict[str, str]) -> Any:
        """Run one request; returns the result or raises WsError / Http500."""
        request = dict(query)
        request.update(form)                       # $_REQUEST (POST wins)
        op = request.get("operation", "").lower()
        self.calls[op or "?"] += 1
        if self.http500_next > 0:
            self.http500_next -= 1
            raise Http500(op)
        known = GET_OPS | POST_OPS
        if self.flavour == "vtiger":
            known = known - {"login_pwd"}
        if op not in known:
            if self.flavour == "vtiger":
                raise Http500(op, b"")
            raise WsError("UNKNOWN_OPERATION", "Unknown operation requested")
        params = query if op in GET_OPS else form
        self.log.append((op, dict(params)))
        self._request = request
        session = request.get("sessionName") or None
        if session and session.lower() == "null":
            session = None
        user_id = None
        if session is not None:
            user_id = self._check_session(session)
        elif op not in PRELOGIN:
            raise WsError("AUTHENTICATION_REQUIRED", "Authencation required")
        if self.fail_next and (self.fail_ops is None or op in self.fail_ops):
            code, message = self.fail_next.pop(0)
            raise WsError(code, message)
        if op == "getchallenge":
            return self.op_getchallenge(params.get("username", ""))
        if op == "login":
            return self.op_login(params.get("username", ""), params.get("accessKey", ""))
        if op == "login_pwd":
            return self.op_login_pwd(params.get("username", ""), params.get("password", ""))
        assert user_id is not None
        if op == "logout":
            if self.flavour == "vtiger":
                raise Http500(op, b"")      # the session stays valid
            self.sessions.pop(session or "", None)
            return {"message": "successfull"}
        if op == "listtypes":
            if self.flavour == "vtiger":
                return {"types": [t[0] for t in VT82_TYPES], "information": {
                    t[0]: {"isEntity": t[3], "label": t[1], "singular": t[2]}
                    for t in VT82_TYPES}}
            return {"types": ["Contacts", "Accounts", "Calendar", "Events", "Users"],
                    "information": {}}
        if op == "describe":
            return self.op_describe(params.get("elementType", ""), user_id)
        if op == "query":
            return self.op_query(params.get("query", ""), user_id)
        if op == "retrieve":
            return self.op_retrieve(params.get("id", ""), user_id)
        if op == "sync":
            if self.flavour == "vtiger":
                raise Http500(op, b"")      # every variant, GET or POST, any syncType
            return self.op_sync(params.get("modifiedTime", ""), params.get("elementType", ""),
                                user_id)
        if op == "delete":
            return self.op_delete(params.get("id", ""), user_id)
        element = self._element(params.get("element"))
        if op == "create":
            return self.op_create(params.get("elementType", ""), element, user_id)
        return self.op_write(op, element, user_id)

    @staticmethod
    def _element(raw: str | None) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise WsError("INTERNAL_SERVER_ERROR",
                          "Unknown Error while processing request") from None
        return value if isinstance(value, dict) else {}

    def _check_session(self, sid: str) -> int:
        s = self.sessions.get(sid)
        now = self.clock()
        if s is None:
            raise WsError("INVALID_SESSIONID", "Session Identifier provided is Invalid")
        if s.get("dead"):
            del self.sessions[sid]
            code = s["dead"]
            raise WsError(code, {"SESSION_EXPIRED": "Session has life span over please login"
                                 " again", "SESSION_LEFT_IDLE": "Session has been invalidated"
                                 " to due lack activity"}.get(code, "Session Identifier "
                                                                   "provided is Invalid"))
        if now - s["start"] > SESSION_LIFE:
            del self.sessions[sid]
            raise WsError("SESSION_EXPIRED", "Session has life span over please login again")
        if now - s["last"] > SESSION_IDLE:
            del self.sessions[sid]
            raise WsError("SESSION_LEFT_IDLE",
                          "Session has been invalidated to due lack activity")
        s["last"] = now
        return int(s["user"])

    def op_getchallenge(self, username: str) -> dict[str, Any]:
        now = int(self.clock())
        token = uuid.uuid4().hex[:13]
        try:
            uid = self.user_id(username)
        except KeyError:
            if self.flavour == "vtiger":
                raise WsError("ACCESS_DENIED", "username does not exists" if username
                              else "No username given") from None
            uid = 0                         # vtenext stores a token for user id 0
        live = [(t, e) for t, e in self.tokens.get(uid, []) if e >= now]
        if self.flavour == "vtiger":
            live = []                       # one live token per user: the newest
        live.append((token, now + TOKEN_LIFE))
        self.tokens[uid] = live
        return {"token": token, "serverTime": now, "expireTime": now + TOKEN_LIFE}

    def _timezone_diff(self, uid: int) -> int:
        """The user's offset minus the server's, in seconds, now (Users.php)."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        user = ZoneInfo(self.users[uid]["user_timezone"])
        srv = ZoneInfo(self.server_tz)
        return int((now.astimezone(user).utcoffset() or timedelta()).total_seconds()
                   - (now.astimezone(srv).utcoffset() or timedelta()).total_seconds())

    def op_login(self, username: str, access_key: str) -> dict[str, Any]:
        try:
            uid = self.user_id(username)
        except KeyError:
            raise WsError("INVALID_AUTH_TOKEN", "Specified token is invalid or expired") from None
        if self.flavour == "vtenext" and self.failed_logins[uid] >= LOCK_AFTER:
            raise WsError("LOGIN_LOCKED", "Login failed because too many unsuccessfully logins")
        now = self.clock()
        tokens = [t for t, e in self.tokens.get(uid, []) if e >= now]
        if not tokens:
            raise WsError("INVALID_AUTH_TOKEN", "Specified token is invalid or expired")
        user = self.users[uid]
        if not any(hashlib.md5((t + user["accesskey"]).encode()).hexdigest() == access_key
                   for t in tokens):
            self.failed_logins[uid] += 1
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password")
        self.failed_logins[uid] = 0
        if user["status"] != "Active":
            raise WsError("AUTHENTICATION_REQUIRED", "Given user is inactive")
        sid = uuid.uuid4().hex + uuid.uuid4().hex[:9]
        self.sessions[sid] = {"user": uid, "start": now, "last": now,
                              "diff": self._timezone_diff(uid)}
        if self.flavour == "vtenext":
            return {"sessionName": sid, "userId": self.ws_id("Users", uid), "version": "0.22",
                    "vteVersion": "20.04", "timezone": self.sessions[sid]["diff"]}
        return {"username": user["user_name"], "first_name": user["first_name"],
                "last_name": user["last_name"], "email": user["email1"],
                "time_zone": user["user_timezone"], "hour_format": user["hour_format"],
                "date_format": user["date_format"], "is_admin": user["is_admin"],
                "call_duration": "5", "other_event_duration": "5", "sessionName": sid,
                "userId": self.ws_id("Users", uid), "version": "0.22",
                "vtigerVersion": "8.2.0"}

    def op_login_pwd(self, username: str, password: str) -> list[str]:
        try:
            uid = self.user_id(username)
        except KeyError:
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password") from None
        if self.failed_logins[uid] >= LOCK_AFTER:
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password")
        user = self.users[uid]
        if not password or user["password"] is None or password != user["password"]:
            self.failed_logins[uid] += 1
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password")
        self.failed_logins[uid] = 0
        if user["status"] != "Active":
            raise WsError("AUTHENTICATION_REQUIRED", "Given user is inactive")
        return [user["accesskey"]]

    def _is_admin(self, uid: int) -> bool:
        return self.users[uid]["is_admin"] == "on"

    def _module_of(self, ws_id: str) -> tuple[str, int]:
        parsed = _clean_ws_id(ws_id)
        module = None
        if parsed is not None:
            module = ("Events" if parsed[0] == self.prefixes["Events"]
                      else self.by_prefix.get(parsed[0]))
        if parsed is None or module is None:
            if self.flavour == "vtiger":
                raise WsError("ACCESS_DENIED", DENIED + " for id")
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        return module, parsed[1]

    def _target(self, ws_id: str, uid: int, calendar_reaches_events: bool = False
                ) -> tuple[str, int, dict[str, Any]]:
        """The live record an id names, checked as vtiger checks it: missing or deleted
        → ACCESS_DENIED, another module's prefix → INVALID_ID_ATTRIBUTE."""
        module, crmid = self._module_of(ws_id)
        rec = self.records.get(crmid)
        if rec is None or rec["deleted"]:
            raise WsError("ACCESS_DENIED", DENIED)
        real = self._effective(rec)
        lenient = calendar_reaches_events and module == "Calendar" and real == "Events"
        if real != module and not lenient:
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        self._check_access(rec, uid)
        return real, crmid, rec

    def op_describe(self, module: str, uid: int) -> dict[str, Any]:
        if self.flavour == "vtiger" and module in VT82_DESCRIBE:
            return self._vt_describe(module)
        fields = self._fields(module)
        mandatory = set(MANDATORY.get(module, ()))
        out = []
        for name, ftype in fields.items():
            t: dict[str, Any] = {"name": ftype.split(":")[0]}
            if ftype.startswith("reference:"):
                t["refersTo"] = [ftype.split(":")[1]]
            out.append({"name": name, "label": name.replace("_", " ").title(),
                        "mandatory": name in mandatory, "type": t, "nullable": True,
                        "editable": name not in ("createdtime", "modifiedtime"),
                        "default": ""})
        out.append({"name": "id", "label": "id", "mandatory": False,
                    "type": {"name": "autogenerated"}, "nullable": False, "editable": False,
                    "default": ""})
        return {"label": module, "name": module, "createable": True, "updateable": True,
                "deleteable": True, "retrieveable": True, "fields": out,
                "idPrefix": self.prefixes[module], "isEntity": module != "Users",
                "labelFields": "lastname" if module == "Contacts" else "subject"}

    def _vt_describe(self, module: str) -> dict[str, Any]:
        out = []
        for name, label, mandatory, ty, nullable, editable, default in VT82_DESCRIBE[module]:
            if isinstance(ty, str):
                t: dict[str, Any] = {"name": ty}
            elif ty[0] == "picklist":
                values, dflt = ty[1]
                t = {"picklistValues": [{"label": v[0], "value": v[1]} if isinstance(v, tuple)
                                        else {"label": v, "value": v} for v in values],
                     "defaultValue": dflt, "name": "picklist"}
            elif ty[0] == "reference":
                t = {"refersTo": list(ty[1]), "name": "reference"}
            else:
                t = {"format": ty[1], "name": ty[0]}
            out.append({"name": name, "label": label, "mandatory": bool(mandatory),
                        "type": t, "isunique": False, "nullable": bool(nullable),
                        "editable": bool(editable), "default": default})
        out.append({"name": "id", "label": VT82_ID_LABEL[module], "mandatory": False,
                    "type": {"name": "autogenerated"}, "editable": False, "nullable": False,
                    "default": ""})
        label_fields = {"Contacts": "firstname,lastname",
                        "Users": "first_name,last_name"}.get(module, "subject")
        return {"label": module, "name": module, "createable": True, "updateable": True,
                "deleteable": True, "retrieveable": True, "fields": out,
                "idPrefix": self.prefixes[module], "isEntity": True,
                "allowDuplicates": False, "labelFields": label_fields}

    # -- reading records -------------------------------------------------------------
    def _fmt_date(self, value: str, uid: int) -> str:
        if not value or self.flavour == "vtiger":
            return value
        fmt = self.users[uid]["date_format"]
        y, m, d = value[:10].split("-")
        return {"dd-mm-yyyy": f"{d}-{m}-{y}", "mm-dd-yyyy": f"{m}-{d}-{y}"}.get(
            fmt, f"{y}-{m}-{d}")

    @staticmethod
    def _shift(date: str, clock: str, seconds: int) -> tuple[str, str]:
        dt = datetime.strptime(f"{date[:10]} {clock[:5]}", "%Y-%m-%d %H:%M")
        dt += timedelta(seconds=seconds)
        return dt.strftime("%Y-%m-%d"), dt.strftime("%H:%M")

    def _ref(self, target: str, ref: Any) -> str | None:
        live = ref is not None and ref in self.records and not self.records[ref]["deleted"]
        if live:
            return self.ws_id(target, ref)
        return "" if self.flavour == "vtiger" else None

    def _contact_ref(self, rec: dict[str, Any], path: str) -> str | None:
        """The event's ``contact_id``: retrieve names the lowest linked contact, query
        the highest (vtiger, recorded with two)."""
        links = sorted(c for c in rec["contacts"]
                       if c in self.records and not self.records[c]["deleted"])
        if not links:
            return "" if self.flavour == "vtiger" else None
        return self.ws_id("Contacts", links[-1] if path == "query" else links[0])

    def _row(self, crmid: int, rec: dict[str, Any], uid: int, path: str,
             diff: int = 0, columns: list[str] | None = None,
             module: str | None = None) -> dict[str, Any]:
        module = module or self._effective(rec)
        if self.flavour == "vtiger":
            return self._vt_row(crmid, rec, path, columns, module)
        fields = self._fields(module)
        row: dict[str, Any] = {}
        values = dict(rec["fields"])
        if (path == "retrieve" and module == "Events" and diff
                and values.get("date_start") and values.get("time_start")):
            values["date_start"], values["time_start"] = self._shift(
                values["date_start"], values["time_start"], diff)
            if values.get("due_date") and values.get("time_end"):
                values["due_date"], values["time_end"] = self._shift(
                    values["due_date"], values["time_end"], diff)
        for name, ftype in fields.items():
            if columns is not None and name not in columns:
                continue
            if name == "assigned_user_id":
                row[name] = self.ws_id("Users", rec["owner"])
            elif name in ("createdtime", "modifiedtime"):
                row[name] = rec[name]
            elif name == "contact_id" and module in ACTIVITIES:
                row[name] = self._contact_ref(rec, path)
            elif ftype.startswith("reference:"):
                row[name] = self._ref(ftype.split(":")[1], values.get(name))
            elif ftype == "date":
                row[name] = self._fmt_date(values.get(name, ""), uid)
            else:
                row[name] = values.get(name, "")
        row["id"] = self.ws_id(module, crmid)
        return row

    def _vt_value(self, rec: dict[str, Any], name: str, ftype: str, path: str,
                  module: str) -> str:
        if name == "assigned_user_id":
            return self.ws_id("Users", rec["owner"])
        if name in ("createdtime", "modifiedtime"):
            return str(rec[name])
        if name == "modifiedby":
            return self.ws_id("Users", rec["modifiedby"])
        if name in ("source", "starred"):
            return str(rec[name])
        if name == "contact_id" and module in ACTIVITIES:
            return self._contact_ref(rec, path) or ""
        if ftype.startswith("reference:"):
            return self._ref(ftype.split(":")[1], rec["fields"].get(name)) or ""
        value = rec["fields"].get(name)
        if value is None or (value == "" and name == "duration_minutes"):
            return "0" if ftype == "boolean" or name == "duration_minutes" else ""
        return str(value)

    def _vt_row(self, crmid: int, rec: dict[str, Any], path: str,
                columns: list[str] | None, module: str) -> dict[str, Any]:
        fields = self._fields(module)
        names = list(fields) if columns is None else [c for c in columns if c in fields]
        row = {name: self._vt_value(rec, name, fields[name], path, module) for name in names}
        row["id"] = self.ws_id(module, crmid)
        if path != "query":
            f = rec["fields"]
            row["label"] = (" ".join(x for x in (f.get("firstname", ""), f.get("lastname", ""))
                                     if x) if module == "Contacts"
                            else f.get("accountname", "") if module == "Accounts"
                            else f.get("subject", ""))
        return row

    def op_retrieve(self, ws_id: str, uid: int) -> dict[str, Any]:
        module, crmid = self._module_of(ws_id)
        if module == "Users":
            user = self.users.get(crmid)
            if user is None:
                raise WsError("ACCESS_DENIED", DENIED)
            out = {k: user[k] for k in USER_FIELDS}
            if self.flavour == "vtiger":
                out["time_zone"] = out.pop("user_timezone")
            out["id"] = self.ws_id("Users", crmid)
            return out
        _real, crmid, rec = self._target(ws_id, uid,
                                         calendar_reaches_events=self.flavour == "vtenext")
        return self._row(crmid, rec, uid, "retrieve", self._diff(uid))

    def _diff(self, uid: int) -> int:
        for s in self.sessions.values():
            if s["user"] == uid:
                return int(s["diff"])
        return 0

    def _check_access(self, rec: dict[str, Any], uid: int) -> None:
        if not self._is_admin(uid) and rec["owner"] != uid:
            raise WsError("ACCESS_DENIED", "Permission to read given object is denied")

    # -- VTQL --------------------------------------------------------------------------
    _TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|"""
                        r"""(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),;*])|"""
                        r"""(?P<str_id>\d+x\d+)\b|"""
                        r"""(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<num>-?\d+(?:\.\d+)?))""")
    _OP_NAMES: ClassVar[dict[str, str]] = {"=": "EQ", "!=": "NE", "<>": "NE", "<": "LT", ">": "GT", "<=": "LTE",
                                           ">=": "GTE"}

    def _tokens(self, q: str) -> tuple[list[tuple[str, str]], list[str]]:
        out: list[tuple[str, str]] = []
        raw: list[str] = []
        pos = 0
        q = q.rstrip()
        while pos < len(q):
            m = self._TOKEN.match(q, pos)
            if not m or m.end() == pos:
                raise WsError("QUERY_SYNTAX_ERROR",
                              f"Syntax Error on line 1: token '{q[pos:pos + 10]}'")
            pos = m.end()
            kind = m.lastgroup or ""
            text = m.group(kind)
            raw.append(text)
            if kind == "str":
                text = text[1:-1]
            elif kind == "str_id":
                kind = "str"                # an unquoted web-service id is a value
            out.append((kind, text))
        return out, raw

    def _value_error(self, tok: tuple[str, str] | None) -> WsError:
        if self.flavour == "vtiger" and tok is not None and tok[0] == "op":
            return WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{tok[1]}' "
                           f"Unexpected {self._OP_NAMES[tok[1]]}({tok[1]}), expected one of:"
                           " VALUE")
        return WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")

    def parse_vtql(self, q: str) -> dict[str, Any]:
        toks, raw = self._tokens(q)
        if not toks or toks[-1] != ("punct", ";"):
            if self.flavour == "vtiger" and raw:
                raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token "
                              f"'{raw[-1]}' Unexpected End of Input(0), expected one of:"
                              " SEMICOLON")
            raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
        toks = toks[:-1]
        i = 0

        def peek(word: str) -> bool:
            return i < len(toks) and toks[i][0] == "word" and toks[i][1].lower() == word

        def expect(word: str) -> None:
            nonlocal i
            if not peek(word):
                got = toks[i][1] if i < len(toks) else ""
                raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{got}'")
            i += 1

        expect("select")
        columns: list[str] | None = []
        count = False
        if i < len(toks) and toks[i] == ("punct", "*"):
            columns = None
            i += 1
        elif peek("count"):
            i += 1
            if toks[i:i + 3] != [("punct", "("), ("punct", "*"), ("punct", ")")]:
                raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
            i += 3
            count = True
        else:
            while True:
                if i >= len(toks) or toks[i][0] != "word":
                    raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                assert columns is not None
                columns.append(toks[i][1])
                i += 1
                if i < len(toks) and toks[i] == ("punct", ","):
                    i += 1
                    continue
                break
        expect("from")
        if i >= len(toks) or toks[i][0] != "word":
            raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
        module = toks[i][1]
        i += 1
        where: list[Any] = []
        if peek("where"):
            i += 1
            while True:
                if i >= len(toks) or toks[i][0] != "word":
                    raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                col = toks[i][1]
                i += 1
                if i < len(toks) and toks[i][0] == "op":
                    op = toks[i][1]
                    i += 1
                elif peek("in"):
                    op = "IN"
                    i += 1
                elif peek("like"):
                    op = "LIKE"
                    i += 1
                else:
                    raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                if op == "IN":
                    if i >= len(toks) or toks[i] != ("punct", "("):
                        raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                    i += 1
                    values = []
                    while i < len(toks) and toks[i] != ("punct", ")"):
                        if toks[i][0] in ("str", "num"):
                            values.append(toks[i][1])
                        elif toks[i] != ("punct", ","):
                            raise WsError("QUERY_SYNTAX_ERROR",
                                          "There is an syntax error in query")
                        i += 1
                    i += 1
                    value: Any = values
                else:
                    if i >= len(toks) or toks[i][0] not in ("str", "num"):
                        raise self._value_error(toks[i] if i < len(toks) else None)
                    value = toks[i][1]
                    i += 1
                where.append((col, "!=" if op == "<>" else op, value))
                if peek("and") or peek("or"):
                    where.append(toks[i][1].upper())
                    i += 1
                    continue
                break
        order: list[str] = []
        desc = False
        if peek("order"):
            i += 1
            expect("by")
            while i < len(toks) and toks[i][0] == "word":
                order.append(toks[i][1])
                i += 1
                if i < len(toks) and toks[i] == ("punct", ","):
                    i += 1
                else:
                    break
            if peek("asc"):
                i += 1
            elif peek("desc"):
                desc = True
                i += 1
        limit: list[int] = []
        if peek("limit"):
            i += 1
            while i < len(toks) and toks[i][0] == "num":
                limit.append(int(toks[i][1]))
                i += 1
                if i < len(toks) and toks[i] == ("punct", ","):
                    i += 1
                else:
                    break
            if not 1 <= len(limit) <= 2:
                raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
        if i != len(toks):
            raise WsError("QUERY_SYNTAX_ERROR",
                          f"Syntax Error on line 1: token '{toks[i][1]}'")
        return {"columns": columns, "count": count, "module": module, "where": where,
                "order": order, "desc": desc, "limit": limit}

    def _compare_key(self, module: str, col: str, crmid: int, rec: dict[str, Any]) -> Any:
        ftype = self._fields(module).get(col, "text")
        if col == "id":
            return crmid
        if col == "assigned_user_id":
            return rec["owner"]
        if col in ("modifiedtime", "createdtime"):
            return rec[col]
        if col == "contact_id" and module in ACTIVITIES:
            return min(rec["contacts"], default=0)
        if col == "modifiedby":
            return rec.get("modifiedby", 0)
        if col in ("source", "starred"):
            return str(rec.get(col, "")).lower()
        value = rec["fields"].get(col)
        if ftype.startswith("reference:"):
            return value or 0
        return (value or "").lower() if isinstance(value, str) else value

    def _value_key(self, module: str, col: str, value: str) -> Any:
        ftype = self._fields(module).get(col, "text")
        if col == "id" or col == "assigned_user_id" or ftype.startswith("reference:"):
            parsed = _clean_ws_id(value)
            if parsed is None:
                if col == "assigned_user_id":
                    try:
                        return self.user_id(value)
                    except KeyError:
                        return -1
                raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
            return parsed[1]
        return value.lower()

    def _matches(self, module: str, crmid: int, rec: dict[str, Any], cond: Any) -> bool:
        col, op, value = cond
        have = self._compare_key(module, col, crmid, rec)
        if op == "IN":
            return have in {self._value_key(module, col, v) for v in value}
        want = self._value_key(module, col, value)
        if op == "LIKE":
            pattern = "^" + re.escape(str(want)).replace("%", ".*").replace("_", ".") + "$"
            return re.match(pattern, str(have), re.DOTALL) is not None
        try:
            return {"=": have == want, "!=": have != want, "<": have < want,
                    ">": have > want, "<=": have <= want, ">=": have >= want}[op]
        except TypeError:
            return False

    def _where(self, module: str, crmid: int, rec: dict[str, Any], where: list[Any]) -> bool:
        if not where:
            return True
        # MySQL precedence: AND binds tighter than OR
        groups: list[list[Any]] = [[]]
        for part in where:
            if part == "OR":
                groups.append([])
            elif part != "AND":
                groups[-1].append(part)
        return any(all(self._matches(module, crmid, rec, c) for c in g) for g in groups)

    def _module_records(self, module: str) -> list[tuple[int, dict[str, Any]]]:
        return [(crmid, rec) for crmid, rec in self.records.items()
                if self._effective(rec) == module]

    def op_query(self, q: str, uid: int) -> Any:
        if self.flavour == "vtiger":
            # the module is looked up before the query is parsed
            found = re.search(r"[fF][rR][oO][mM]\s+([^\s;]+)", q or "")
            if not found:
                raise WsError("ACCESS_DENIED", DENIED + " for query")
            self._fields(found.group(1))
        parsed = self.parse_vtql(q)
        module = parsed["module"]
        fields = self._fields(module)
        known = set(fields) | {"id"}
        for col in (parsed["columns"] or []) + [c[0] for c in parsed["where"]
                                                 if isinstance(c, tuple)] + parsed["order"]:
            if col not in known:
                raise WsError("ACCESS_DENIED", f"Permission to access '{col}' attribute denied.")
        if module == "Users":
            if not self._is_admin(uid):
                raise WsError("ACCESS_DENIED", "Permission to read is denied")
            rows = []
            for user_id in sorted(self.users):
                u = self.users[user_id]
                fake = {"fields": dict(u), "owner": user_id, "modifiedtime": "",
                        "createdtime": ""}
                if self._where(module, user_id, fake, parsed["where"]):
                    row = {k: u[k] for k in USER_FIELDS}
                    if self.flavour == "vtiger":
                        row["time_zone"] = row.pop("user_timezone")
                    row["id"] = self.ws_id("Users", user_id)
                    if parsed["columns"] is not None:
                        row = {k: v for k, v in row.items()
                               if k in parsed["columns"] or k == "id"}
                    rows.append(row)
            return rows
        matched = [(crmid, rec) for crmid, rec in self._module_records(module)
                   if not rec["deleted"] and self._where(module, crmid, rec, parsed["where"])]
        if parsed["count"]:
            return [{"count": str(len(matched))}]
        if parsed["order"]:
            matched.sort(key=lambda cr: tuple(self._compare_key(module, c, cr[0], cr[1])
                                              for c in parsed["order"]),
                         reverse=parsed["desc"])
        else:
            matched.sort(key=lambda cr: cr[0])
        limit = parsed["limit"]
        if self.flavour == "vtiger":
            if not limit:
                start, n = 0, 100
            elif len(limit) == 1:
                start, n = 0, min(limit[0], 100)
            else:
                start, n = limit[0], min(limit[1], 100)
        else:
            if not limit:
                start, n = 0, 1000
            elif len(limit) == 1:
                start, n = 0, limit[0]
            else:
                start, n = limit[0], limit[1]
        page = matched[start:start + n]
        cols = parsed["columns"]
        out = []
        for crmid, rec in page:
            if not self._is_admin(uid) and rec["owner"] != uid:
                continue                    # dropped after the LIMIT: a short page
            out.append(self._row(crmid, rec, uid, "query", columns=cols))
        return out


    # -- sync (vtenext; vtiger 8.2 answers HTTP 500) -----------------------------------
    def _to_local(self, seconds: int) -> str:
        return datetime.fromtimestamp(seconds, UTC).astimezone(
            ZoneInfo(self.server_tz)).strftime("%Y-%m-%d %H:%M:%S")

    def _to_seconds(self, local: str) -> int:
        dt = datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=ZoneInfo(self.server_tz))
        return int(dt.timestamp())

    def op_sync(self, modified: str, module: str, uid: int) -> dict[str, Any]:
        """Only the session user's own records: the web service registers just
        ``modifiedTime`` and ``elementType`` for sync, so a ``syncType`` never reaches
        the handler (issue #9, point 1)."""
        if self.vtiger_sync_broken:
            raise Http500("sync")
        try:
            mtime = int(float(modified or 0))
        except ValueError:
            mtime = 0
        if module not in ("Contacts", "Events", "Calendar", "Accounts"):
            raise WsError("ACCESS_DENIED", DENIED)
        since = self._to_local(mtime)
        candidates = [(crmid, rec) for crmid, rec in self._module_records(module)
                      if rec["modifiedtime"] > since and rec["owner"] == uid]
        times = sorted(rec["modifiedtime"] for _c, rec in candidates)[:100]
        top = max(times) if times else since
        updated, deleted = [], []
        for crmid, rec in sorted(candidates, key=lambda cr: cr[0]):
            if rec["modifiedtime"] > top:
                continue
            if rec["deleted"]:
                deleted.append(self.ws_id(module, crmid))
            else:
                updated.append(self._row(crmid, rec, uid, "sync"))
        more = any(rec["modifiedtime"] > top for _c, rec in candidates)
        return {"updated": updated, "deleted": deleted, "more": more,
                "lastModifiedTime": self._to_seconds(top) if times else mtime}

    # -- writes ------------------------------------------------------------------------
    @staticmethod
    def _reminder_minutes(raw: Any) -> str:
        try:
            seconds = int(float(raw)) if raw not in (None, "") else 0
        except (TypeError, ValueError):
            seconds = 0
        if seconds <= 0:
            return "0"
        minutes = (seconds // 60) % 60
        hours = (seconds // 3600) % 24
        days = seconds // 86400
        if minutes == 0:
            minutes = 1             # "at vte there cant be 0 minutes reminder"
        return str(days * 1440 + hours * 60 + minutes)

    def _apply_reminder(self, rec: dict[str, Any], element: dict[str, Any],
                        creating: bool = False) -> None:
        """A write without ``reminder_time`` deletes the reminder row (''), except a
        vtiger Events create, which stores one of 0 minutes ('0')."""
        raw = element.get("reminder_time")
        if raw in (None, ""):
            keep = creating and self.flavour == "vtiger"
            rec["fields"]["reminder_time"] = "0" if keep else ""
            return
        minutes = self._reminder_minutes(raw)
        if self.flavour == "vtenext" and minutes == "0":
            minutes = ""
        rec["fields"]["reminder_time"] = minutes

    def _apply_times(self, rec: dict[str, Any], element: dict[str, Any], diff: int) -> None:
        if self.flavour != "vtenext" or not diff:
            return
        f = rec["fields"]
        for dkey, tkey in (("date_start", "time_start"), ("due_date", "time_end")):
            if element.get(dkey) and element.get(tkey):
                f[dkey], f[tkey] = self._shift(f[dkey], f[tkey], -diff)

    def _apply_invitees(self, rec: dict[str, Any], element: dict[str, Any]) -> None:
        invitees = element.get("invitees")
        if self.flavour != "vtenext" or not isinstance(invitees, list):
            return
        found = []
        for inv in invitees:
            if not isinstance(inv, dict) or not inv.get("email"):
                continue
            email = str(inv["email"]).lower()
            for uid, u in self.users.items():
                if u["email1"].lower() == email:
                    found.append({"module": "Users", "id": uid,
                                  "partecipation": int(inv.get("partecipation") or 0)})
            for crmid, r in self.records.items():
                if (r["module"] == "Contacts" and not r["deleted"]
                        and email in (r["fields"].get("email", "").lower(),
                                      r["fields"].get("yahooid", "").lower())):
                    found.append({"module": "Contacts", "id": crmid,
                                  "partecipation": int(inv.get("partecipation") or 0)})
        rec["invitees"] = found

    def _require(self, module: str, values: dict[str, Any], rec: dict[str, Any] | None = None
                 ) -> None:
        """MANDATORY_FIELDS_MISSING for the first mandatory field (describe order) that
        ``values`` (an element) or else ``rec`` lacks."""
        for name in self._mandatory(module):
            if rec is None:
                have = values.get(name)
            elif name == "assigned_user_id":
                have = rec["owner"]
            else:
                have = rec["fields"].get(name)
            if have in (None, ""):
                raise WsError("MANDATORY_FIELDS_MISSING", f"{name} does not have a value")

    def _validate(self, module: str, rec: dict[str, Any]) -> None:
        if self.flavour == "vtenext":
            self._require(module, {}, rec)
        for name, ftype in self._fields(module).items():
            value = rec["fields"].get(name)
            if not value:
                continue
            if ftype == "date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
                raise WsError("INTERNAL_SERVER_ERROR", f"{name}: date not in Y-m-d")
            if name in ("time_start", "time_end") and not re.fullmatch(
                    r"\d{2}:\d{2}(:\d{2})?", str(value)):
                raise WsError("INTERNAL_SERVER_ERROR", f"{name}: time not in H:i")
        if module == "Events" and rec["fields"].get("activitytype") == "Task":
            raise WsError("ACCESS_DENIED", DENIED)

    def _check_owner(self, value: Any) -> int:
        owner = _clean_ws_id(value)
        if owner is None or owner[0] != self.prefixes["Users"] or owner[1] not in self.users:
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        return owner[1]

    def _contact_list(self, rec: dict[str, Any]) -> None:
        """vtiger's Calendar save (``Activity::save_module``, source, not recorded): a
        request that also carries a non-empty ``contactidlist`` form field (';'-joined
        record numbers) gets exactly those links."""
        listed = self._request.get("contactidlist", "") if self.flavour == "vtiger" else ""
        if listed:
            rec["contacts"] = sorted({int(x) for x in listed.split(";") if x.strip().isdigit()})

    @staticmethod
    def _task_duration(f: dict[str, Any]) -> None:
        """A task's duration when none is sent: from its start to 23:00 of due_date (or
        to time_end), as vtiger 8.2 computed it."""
        if f.get("duration_hours") not in (None, ""):
            return
        try:
            start = datetime.strptime(f"{f['date_start']} {f['time_start'][:5]}",
                                      "%Y-%m-%d %H:%M")
            end = datetime.strptime(f"{f['due_date']} {(f.get('time_end') or '23:00')[:5]}",
                                    "%Y-%m-%d %H:%M")
        except (KeyError, ValueError):
            return
        minutes = max(0, int((end - start).total_seconds()) // 60)
        f["duration_hours"] = str(minutes // 60)
        f["duration_minutes"] = str(minutes % 60)

    def op_create(self, module: str, element: dict[str, Any], uid: int) -> dict[str, Any]:
        if module not in ("Contacts", "Events", "Calendar", "Accounts"):
            raise WsError("ACCESS_DENIED", DENIED)
        if self.flavour == "vtiger":
            self._require(module, element)
        elif not element.get("assigned_user_id"):
            raise WsError("MANDATORY_FIELDS_MISSING", "assigned_user_id does not have a value")
        owner = self._check_owner(element["assigned_user_id"])
        rec = self._new_rec(module, owner, "WEBSERVICE", uid)
        if module == "Calendar":
            rec["fields"]["activitytype"] = "Task" if self.flavour == "vtenext" else ""
        for k, v in element.items():
            if k in ("invitees", "reminder_time"):
                continue
            if k == "activitytype" and module == "Calendar" and self.flavour == "vtenext":
                continue
            self._set_field(rec, k, v)
        self._validate(module, rec)
        if module == "Calendar" and self.flavour == "vtiger":
            self._task_duration(rec["fields"])
        if module in ACTIVITIES:
            if module == "Events" or "reminder_time" in element:
                self._apply_reminder(rec, element, creating=module == "Events")
            else:
                rec["fields"]["reminder_time"] = ""
        if module == "Events":
            self._apply_times(rec, element, self._diff(uid))
            self._apply_invitees(rec, element)
        if module in ACTIVITIES:
            self._contact_list(rec)
        self._number(rec)
        crmid = self._new_id()
        self.records[crmid] = rec
        # create answers in the module asked for (a Calendar record without
        # activitytype still comes back with the Calendar prefix)
        as_module = {"module": module} if module != self._effective(rec) else {}
        return self._row(crmid, rec, uid, "retrieve", self._diff(uid), **as_module)

    def op_write(self, op: str, element: dict[str, Any], uid: int) -> dict[str, Any]:
        vtiger = self.flavour == "vtiger"
        real, crmid, rec = self._target(str(element.get("id", "")), uid,
                                        calendar_reaches_events=not vtiger)
        new = dict(rec, fields=dict(rec["fields"]), invitees=list(rec["invitees"]),
                   contacts=list(rec["contacts"]), modifiedtime=self.now_local(),
                   modifiedby=uid, starred=rec["starred"] or "0")
        encode = op == "update" and vtiger
        if op == "update":
            if vtiger:
                # 8.2 merges, but the mandatory fields must be sent
                self._require(real, element)
            else:
                # update takes the whole record: what is not sent becomes empty
                keep = {"activitytype"} if real == "Calendar" else set()
                new["fields"] = {k: v for k, v in new["fields"].items() if k in keep}
                new["contacts"] = []
                if not element.get("assigned_user_id"):
                    raise WsError("MANDATORY_FIELDS_MISSING",
                                  "assigned_user_id does not have a value")
        if rec["module"] in ACTIVITIES and "contact_id" not in element and new["contacts"]:
            # all links are deleted and the one retrieve shows is inserted again
            shown = _clean_ws_id(self._contact_ref(new, "retrieve"))
            new["contacts"] = [shown[1]] if shown else []
        for k, v in element.items():
            if k in ("invitees", "reminder_time", "id"):
                continue
            if k == "activitytype" and real == "Calendar" and not vtiger:
                continue
            self._set_field(new, k, v)
        self._validate(real, new)
        if vtiger:
            self._require(real, {}, new)
        if rec["module"] in ACTIVITIES:
            self._apply_reminder(new, element)    # absent: the reminder is deleted
            self._contact_list(new)
        if real == "Events":
            self._apply_times(new, element, self._diff(uid))
            self._apply_invitees(new, element)
        answer = self._row(crmid, new, uid, "retrieve", self._diff(uid))
        if encode:
            # the answer shows the merged values; the kept ones are stored again
            # HTML-entity-encoded (read back so by the next retrieve)
            new["fields"] = {k: html_entities(v) if isinstance(v, str) and k not in element
                             else v for k, v in new["fields"].items()}
        self.records[crmid] = new
        return answer

    def op_delete(self, ws_id: str, uid: int) -> Any:
        if self.flavour == "vtenext":
            _module, crmid = self._module_of(ws_id)
            rec = self.records.get(crmid)
            if rec is None or rec["deleted"]:
                return None                 # crmv@2390m: deleting a missing id succeeds
            self._check_access(rec, uid)
        else:
            _real, crmid, rec = self._target(ws_id, uid)
        rec["deleted"] = True
        rec["modifiedtime"] = self.now_local()
        return {"status": "successful"}

    # -- the vtiger web UI (Edit view and Save action, as recorded) ---------------------
    _UI_DATE: ClassVar[dict[str, str]] = {
        "dd-mm-yyyy": "%d-%m-%Y", "mm-dd-yyyy": "%m-%d-%Y", "yyyy-mm-dd": "%Y-%m-%d",
        "dd.mm.yyyy": "%d.%m.%Y", "dd/mm/yyyy": "%d/%m/%Y"}

    def _ui_fmt(self, uid: int) -> str:
        return self._UI_DATE.get(self.users[uid]["date_format"], "%Y-%m-%d")

    def _ui_date_in(self, text: str, uid: int) -> str:
        text = (text or "").strip()
        if not text:
            return ""
        return datetime.strptime(text, self._ui_fmt(uid)).strftime("%Y-%m-%d")

    def _ui_date_out(self, iso: str, uid: int) -> str:
        if not iso:
            return ""
        return datetime.strptime(iso[:10], "%Y-%m-%d").strftime(self._ui_fmt(uid))

    def _ui_zone(self, uid: int) -> ZoneInfo:
        return ZoneInfo(self.users[uid]["user_timezone"])

    def _ui_today(self, uid: int) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).astimezone(self._ui_zone(uid)).date()

    def _ui_to_utc(self, day: str, clock: str, uid: int) -> datetime:
        """The user's local date (in their format) and time → a UTC datetime."""
        local = datetime.strptime(f"{self._ui_date_in(day, uid)} {clock[:5]}",
                                  "%Y-%m-%d %H:%M").replace(tzinfo=self._ui_zone(uid))
        return local.astimezone(UTC)

    def _ui_from_utc(self, iso: str, clock: str, uid: int) -> tuple[str, str]:
        if not iso or not clock:
            return self._ui_date_out(iso, uid), clock
        utc = datetime.strptime(f"{iso[:10]} {clock[:5]}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        local = utc.astimezone(self._ui_zone(uid))
        return local.strftime(self._ui_fmt(uid)), local.strftime("%H:%M:%S")

    @staticmethod
    def _ui_text(value: str) -> str:
        """What the UI's purifier leaves of a text: no tags, LF line ends."""
        return re.sub(r"<[^>]*>", "", value).replace("\r\n", "\n")

    def _ui_header(self, module: str, crmid: int | None) -> list[tuple[str, str]]:
        return [("__vtrftk", "sid:fake-csrf"), ("module", module), ("action", "Save"),
                ("record", str(crmid) if crmid else ""), ("defaultCallDuration", "5"),
                ("defaultOtherEventDuration", "5"), ("appName", "&app=MARKETING"),
                ("picklistDependency", "[]")]

    def ui_edit_form(self, module: str, user: int | str,
                     record: str | None = None) -> list[tuple[str, str]]:
        """The Edit view's form of ``record`` (or of a new record) as the browser posts
        it when the user changes nothing."""
        uid = self._owner(user)
        crmid = None
        rec = None
        if record:
            parsed = _clean_ws_id(record) or ("", int(record))
            crmid = parsed[1]
            rec = self.records[crmid]
        if module == "Contacts":
            return self._ui_contact_form(uid, crmid, rec)
        return self._ui_event_form(uid, crmid, rec)

    def _ui_event_form(self, uid: int, crmid: int | None,
                       rec: dict[str, Any] | None) -> list[tuple[str, str]]:
        f = rec["fields"] if rec else {}
        today = self._ui_today(uid)
        if rec:
            ds, ts = self._ui_from_utc(f.get("date_start", ""), f.get("time_start", ""), uid)
            de, te = self._ui_from_utc(f.get("due_date", ""), f.get("time_end", ""), uid)
        else:
            ds = de = today.strftime(self._ui_fmt(uid))
            ts, te = "09:00", "10:00"
        minutes = int(f.get("reminder_time") or 0)
        if minutes:
            reminder = [("set_reminder", "Yes"), ("remdays", str(minutes // 1440)),
                        ("remhrs", str(minutes % 1440 // 60)), ("remmin", str(minutes % 60))]
        else:
            reminder = [("set_reminder", "0"), ("remdays", "0"), ("remhrs", "0"),
                        ("remmin", "1")]
        rec_rule = rec.get("recurring") if rec else None
        if rec_rule:
            repeat = [("recurringcheck", ""), ("repeat_frequency", str(rec_rule["freq"])),
                      ("recurringtype", rec_rule["type"]),
                      ("calendar_repeat_limit_date", self._ui_date_out(rec_rule["end"], uid))]
            days = [int(x) for x in rec_rule["info"].split("::")[1:] if x.isdigit()]
            repeat += [(f"{p}_flag", name) for i, (p, name, _w) in enumerate(UI_WEEKDAYS)
                       if i in days]
        else:
            limit = (today + timedelta(days=1)).strftime(self._ui_fmt(uid)) if rec else ""
            repeat = [("repeat_frequency", "1"), ("recurringtype", "--None--"),
                      ("calendar_repeat_limit_date", limit)]
        parent = f.get("parent_id")
        return self._ui_header("Events", crmid) + [
            ("subject", f.get("subject", "")),
            ("assigned_user_id", str(rec["owner"] if rec else uid)),
            ("date_start", ds), ("time_start", ts), ("due_date", de), ("time_end", te),
            ("eventstatus", f.get("eventstatus") or "Planned"),
            ("sendnotification", f.get("sendnotification") or "0"),
            ("activitytype", f.get("activitytype") or "Call"),
            ("location", f.get("location", "")), ("taskpriority", f.get("taskpriority", "")),
            ("visibility", f.get("visibility") or "Public"), *reminder, *repeat,
            ("repeatMonth", "date"), ("repeatMonth_date", "2"),
            ("repeatMonth_daytype", "first"), ("repeatMonth_day", "0"),
            ("popupReferenceModule", "Contacts"), ("contact_id_display", ""),
            ("relatedContactInfo", ""), ("popupReferenceModule", "Accounts"),
            ("parent_id", str(parent) if parent else ""), ("parent_id_display", ""),
            ("description", f.get("description", "").replace("\n", "\r\n")),
            ("recurringEditMode", ""), ("inviteesid", ""),
            ("contactidlist", ";".join(str(c) for c in sorted(rec["contacts"] if rec else []))),
        ]

    def _ui_contact_form(self, uid: int, crmid: int | None,
                         rec: dict[str, Any] | None) -> list[tuple[str, str]]:
        f = rec["fields"] if rec else {}
        today = self._ui_today(uid)
        try:
            next_year = today.replace(year=today.year + 1)
        except ValueError:                      # 29 February
            next_year = today.replace(year=today.year + 1, day=28)

        def v(name: str) -> str:
            return str(f.get(name) or "")

        def ref(name: str) -> str:
            return str(f.get(name) or "0")

        salutation = v("salutationtype") if v("salutationtype") in UI_SALUTATIONS else ""
        start = (self._ui_date_out(v("support_start_date"), uid)
                 or today.strftime(self._ui_fmt(uid)))
        end = (self._ui_date_out(v("support_end_date"), uid)
               or next_year.strftime(self._ui_fmt(uid)))
        out = self._ui_header("Contacts", crmid) + [
            ("salutationtype", salutation), ("firstname", v("firstname")),
            ("lastname", v("lastname")), ("phone", v("phone")),
            ("popupReferenceModule", "Accounts"), ("account_id", ref("account_id")),
            ("account_id_display", ""), ("mobile", v("mobile")),
            ("leadsource", v("leadsource")), ("homephone", v("homephone")),
            ("title", v("title")), ("otherphone", v("otherphone")),
            ("department", v("department")), ("fax", v("fax")), ("email", v("email")),
            ("birthday", self._ui_date_out(v("birthday"), uid)),
            ("assistant", v("assistant")), ("popupReferenceModule", "Contacts"),
            ("contact_id", ref("contact_id")), ("contact_id_display", ""),
            ("assistantphone", v("assistantphone")),
            ("secondaryemail", v("secondaryemail")),
        ]
        out += [(k, f.get(k) or "0") for k in ("emailoptout", "donotcall", "reference")]
        out += [("assigned_user_id", str(rec["owner"] if rec else uid)),
                ("notify_owner", v("notify_owner") or "0"), ("portal", v("portal") or "0"),
                ("support_start_date", start), ("support_end_date", end)]
        out += [(k, v(k).replace("\n", "\r\n")) for k in (
            "mailingstreet", "otherstreet", "mailingpobox", "otherpobox", "mailingcity",
            "othercity", "mailingstate", "otherstate", "mailingzip", "otherzip",
            "mailingcountry", "othercountry", "description")]
        return out

    def ui_apply(self, form: list[tuple[str, str]], changes: dict[str, Any]
                 ) -> list[tuple[str, str]]:
        """``form`` with what a user types or ticks: form field names; ``contact_id``
        (ids, "a,b" or a list) sets ``contactidlist``; ``recurringcheck`` and
        ``<day>_flag`` ("checked" or not) tick or untick the boxes."""
        out = list(form)
        names = [k for k, _v in out]

        def put(key: str, value: str, after: str | None = None) -> None:
            if key in names:
                out[names.index(key)] = (key, value)
            else:
                at = names.index(after) + 1 if after in names else len(out)
                out.insert(at, (key, value))
                names.insert(at, key)

        def drop(key: str) -> None:
            while key in names:
                at = names.index(key)
                del out[at], names[at]

        for key, value in changes.items():
            ticked = value not in (None, "", "0", False, "unchecked")
            if key in ("contact_id", "contacts"):
                ids = value if isinstance(value, list) else str(value or "").split(",")
                crmids = [str(_clean_ws_id(i)[1]) if _clean_ws_id(i) else str(i).strip()
                          for i in ids if str(i).strip()]
                put("contactidlist", ";".join(crmids))
            elif key == "recurringcheck":
                if ticked:
                    put("recurringcheck", "", after="remmin")
                else:
                    drop("recurringcheck")
            elif key.endswith("_flag") and key[:-5] in {p for p, _n, _w in UI_WEEKDAYS}:
                full = {p: n for p, n, _w in UI_WEEKDAYS}[key[:-5]]
                if ticked:
                    last = max((k for k in names if k.endswith("_flag")),
                               key=names.index, default="calendar_repeat_limit_date")
                    put(key, full, after=last)
                else:
                    drop(key)
            else:
                put(key, "" if value is None else str(value))
        return out

    def ui_save(self, module: str, fields: Any, user: int | str) -> list[str]:
        """Post an Edit-view form (pairs or a dict) as vtiger's Save action does;
        returns the ids of the saved records (one per occurrence for a new series)."""
        pairs = _pairs(fields)
        form = dict(pairs)
        uid = self._owner(user)
        record = (form.get("record") or "").strip()
        crmid = int(record) if record.isdigit() else None
        if module == "Contacts":
            return [self._ui_save_contact(form, uid, crmid)]
        if module not in ACTIVITIES:
            raise ValueError(module)
        return self._ui_save_event(form, {k for k, _v in pairs}, uid, crmid)

    def _ui_save_contact(self, form: dict[str, str], uid: int, crmid: int | None) -> str:
        if crmid is None:
            rec = self._new_rec("Contacts", uid, "CRM", uid)
        else:
            rec = self.records[crmid]
        for name, ftype in self._fields("Contacts").items():
            if name not in form or name in ("contact_no", "createdtime", "modifiedtime",
                                            "modifiedby", "source", "starred", "tags",
                                            "imagename", "isconvertedfromlead"):
                continue
            value = form[name]
            if name == "assigned_user_id":
                rec["owner"] = self._owner(value)
            elif ftype == "date":
                rec["fields"][name] = self._ui_date_in(value, uid)
            elif ftype.startswith("reference:"):
                rec["fields"][name] = int(value) if value.isdigit() and int(value) else None
            elif ftype in ("text", "email"):
                rec["fields"][name] = self._ui_text(value)
            else:
                rec["fields"][name] = value
        rec["modifiedby"] = uid
        rec["modifiedtime"] = self.now_local()
        if crmid is None:
            self._number(rec)
            crmid = self._new_id()
            self.records[crmid] = rec
        return self.ws_id("Contacts", crmid)

    @staticmethod
    def _ui_occurrences(first: date, kind: str, freq: int, weekdays: set[int],
                        until: date) -> list[date]:
        out: list[date] = []
        freq = max(1, freq)
        if kind == "Weekly":
            monday = first - timedelta(days=first.weekday())
            day = first
            while day <= until and len(out) < 1000:
                if day.weekday() in weekdays and ((day - monday).days // 7) % freq == 0:
                    out.append(day)
                day += timedelta(days=1)
            return out
        n = 0
        while len(out) < 1000:
            if kind == "Daily":
                day = first + timedelta(days=n * freq)
            else:
                months = n * freq * (12 if kind == "Yearly" else 1)
                y, m = divmod(first.month - 1 + months, 12)
                try:
                    day = first.replace(year=first.year + y, month=m + 1)
                except ValueError:
                    n += 1
                    continue
            if day > until:
                break
            out.append(day)
            n += 1
        return out

    def _ui_save_event(self, form: dict[str, str], keys: set[str], uid: int,
                       crmid: int | None) -> list[str]:
        start = self._ui_to_utc(form["date_start"], form["time_start"], uid)
        end = self._ui_to_utc(form.get("due_date") or form["date_start"],
                              form.get("time_end") or form["time_start"], uid)
        minutes = max(0, int((end - start).total_seconds()) // 60)
        if form.get("set_reminder", "0") not in ("", "0"):
            reminder = str(int(form.get("remdays") or 0) * 1440
                           + int(form.get("remhrs") or 0) * 60 + int(form.get("remmin") or 0))
        else:
            reminder = "0"
        values = {k: self._ui_text(form.get(k, "")) for k in (
            "subject", "eventstatus", "activitytype", "location", "taskpriority",
            "visibility", "description")}
        values.update(sendnotification=form.get("sendnotification") or "0", notime="0",
                      duration_hours=str(minutes // 60), duration_minutes=str(minutes % 60),
                      reminder_time=reminder, recurringtype=form.get("recurringtype", ""))
        parent = form.get("parent_id", "")
        owner = self._owner(form.get("assigned_user_id") or uid)
        contacts = [int(x) for x in form.get("contactidlist", "").split(";")
                    if x.strip().isdigit()]
        kind = form.get("recurringtype", "")
        series = crmid is None and "recurringcheck" in keys and kind in UI_RECURRING
        days = [start.date()]
        rule = None
        if series:
            local_first = datetime.strptime(self._ui_date_in(form["date_start"], uid),
                                            "%Y-%m-%d").date()
            until = self._ui_date_in(form.get("calendar_repeat_limit_date", ""), uid)
            flags = {i for i, (p, _n, _w) in enumerate(UI_WEEKDAYS) if f"{p}_flag" in keys}
            weekdays = {UI_WEEKDAYS[i][2] for i in flags} or {local_first.weekday()}
            until_day = (datetime.strptime(until, "%Y-%m-%d").date() if until
                         else local_first + timedelta(days=365))
            freq = int(form.get("repeat_frequency") or 1)
            shift = start.date() - local_first
            days = [d + shift for d in self._ui_occurrences(local_first, kind, freq, weekdays,
                                                            until_day)] or [start.date()]
            info = kind if kind != "Weekly" else "Weekly::" + "::".join(
                str(i) for i in sorted(flags or {(local_first.weekday() + 1) % 7}))
            rule = {"date": start.date().isoformat(), "type": kind, "freq": freq,
                    "info": info, "end": until_day.isoformat()}
        ids: list[str] = []
        first_id = None
        for day in days:
            if crmid is not None:
                rec = self.records[crmid]
                target = crmid
            else:
                rec = self._new_rec("Events", owner, "CRM", uid)
                target = self._new_id()
            rec["owner"] = owner
            rec["fields"].update(values)
            span = end.date() - start.date()
            rec["fields"].update(date_start=day.isoformat(),
                                 time_start=start.strftime("%H:%M:%S"),
                                 due_date=(day + span).isoformat(),
                                 time_end=end.strftime("%H:%M:%S"))
            rec["fields"]["parent_id"] = int(parent) if parent.isdigit() else None
            rec["contacts"] = list(contacts)
            rec["modifiedby"] = uid
            rec["modifiedtime"] = self.now_local()
            if rule is not None:
                rec["recurring"] = dict(rule)
            self.records[target] = rec
            first_id = first_id or target
            if rule is not None:
                self.recurring_info.append((first_id, target))
            ids.append(self.ws_id("Events", target))
        return ids

    def ui_save_event(self, user: int | str, record: str | None = None,
                      changes: dict[str, Any] | None = None, **more: Any) -> list[str]:
        """Open an event (or a new one) in the UI, change ``changes``, save."""
        form = self.ui_apply(self.ui_edit_form("Events", user, record),
                             dict(changes or {}, **more))
        return self.ui_save("Events", form, user)

    def ui_save_contact(self, user: int | str, record: str | None = None,
                        changes: dict[str, Any] | None = None, **more: Any) -> list[str]:
        """Open a contact (or a new one) in the UI, change ``changes``, save."""
        form = self.ui_apply(self.ui_edit_form("Contacts", user, record),
                             dict(changes or {}, **more))
        return self.ui_save("Contacts", form, user)

    def ui_create_series(self, user: int | str, subject: str, date_start: str,
                         time_start: str, time_end: str, until: str,
                         recurringtype: str = "Weekly", frequency: int = 1,
                         weekdays: list[str] | None = None,
                         changes: dict[str, Any] | None = None) -> list[str]:
        """A repeating event saved in the UI (dates in the user's format, local
        times): one record per occurrence."""
        want: dict[str, Any] = {"subject": subject, "date_start": date_start,
                                "time_start": time_start, "due_date": date_start,
                                "time_end": time_end, "recurringcheck": "checked",
                                "repeat_frequency": str(frequency),
                                "recurringtype": recurringtype,
                                "calendar_repeat_limit_date": until}
        for day in weekdays or []:
            want[f"{day[:3].lower()}_flag"] = "checked"
        want.update(changes or {})
        return self.ui_save_event(user, None, want)

    def ui_link_contacts(self, user: int | str, record: str, contacts: list[str]
                         ) -> list[str]:
        """The UI edit of an event that links exactly ``contacts``."""
        return self.ui_save_event(user, record, {"contact_id": list(contacts)})


# -- HTTP ------------------------------------------------------------------------------

class FakeCrmResource(Resource):
    """``/webservice.php`` over a ``FakeCrm``; ``reactor`` is needed for ``delay``."""

    isLeaf = True

    def __init__(self, crm: FakeCrm, reactor: Any = None) -> None:
        super().__init__()
        self.crm = crm
        self.reactor = reactor

    def render_GET(self, request: server.Request) -> Any:
        return self._render(request, "GET")

    def render_POST(self, request: server.Request) -> Any:
        return self._render(request, "POST")

    def _render(self, request: server.Request, method: str) -> Any:
        crm = self.crm
        if crm.down:
            request.transport.abortConnection()
            return server.NOT_DONE_YET
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.uri.decode()).query,
                                              keep_blank_values=True).items()}
        form: dict[str, str] = {}
        ctype = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if method == "POST" and ctype == "application/x-www-form-urlencoded":
            request.content.seek(0)
            body = request.content.read().decode("utf-8", "replace")
            form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        status = 200
        try:
            payload = json.dumps({"success": True,
                                  "result": crm.handle(method, query, form)}).encode()
            ctype_out = b"application/json"
        except WsError as e:
            payload = json.dumps({"success": False, "error": {
                "code": e.code, "message": e.message}}).encode()
            ctype_out = b"application/json"
        except Http500 as e:
            status, payload, ctype_out = 500, e.body, b"text/html; charset=UTF-8"
        if crm.delay > 0 and self.reactor is not None:
            def later() -> None:
                if request.finished or getattr(request, "_disconnected", False):
                    return
                request.setResponseCode(status)
                request.setHeader(b"content-type", ctype_out)
                request.write(payload)
                request.finish()

            call = self.reactor.callLater(crm.delay, later)
            request.notifyFinish().addErrback(lambda _f: call.active() and call.cancel())
            return server.NOT_DONE_YET
        request.setResponseCode(status)
        request.setHeader(b"content-type", ctype_out)
        return payload


class ControlResource(Resource):
    """``POST /control`` {"action": name, ...} for tests driving a separate process."""

    isLeaf = True
    METHODS = ("ui_edit_form", "ui_save", "ui_save_event", "ui_save_contact",
               "ui_create_series", "ui_link_contacts", "table", "update_user")

    def __init__(self, crm: FakeCrm) -> None:
        super().__init__()
        self.crm = crm

    def render_POST(self, request: server.Request) -> bytes:
        request.content.seek(0)
        cmd = json.loads(request.content.read() or b"{}")
        action = cmd.pop("action", "")
        crm = self.crm
        try:
            if action == "add_user":
                result: Any = crm.add_user(cmd.pop("name"), **cmd)
            elif action == "add_record":
                result = crm.add_record(cmd["module"], cmd["fields"], cmd.get("owner"),
                                        cmd.get("modifiedtime"))
            elif action == "add_records":
                result = [crm.add_record(cmd["module"], f, cmd.get("owner"),
                                         cmd.get("modifiedtime")) for f in cmd["fields"]]
            elif action == "modify_record":
                crm.modify_record(cmd["id"], cmd["fields"], cmd.get("modifiedtime"))
                result = None
            elif action == "delete_record":
                crm.delete_record(cmd["id"], cmd.get("modifiedtime"))
                result = None
            elif action == "record":
                result = crm.record(cmd["id"])
            elif action == "live":
                result = crm.live(cmd["module"], cmd.get("owner"))
            elif action == "set":
                for key in ("down", "delay", "http500_next", "vtiger_sync_broken"):
                    if key in cmd:
                        setattr(crm, key, cmd[key])
                if "fail_next" in cmd:
                    crm.fail_next = [tuple(x) for x in cmd["fail_next"]]
                    crm.fail_ops = set(cmd["fail_ops"]) if cmd.get("fail_ops") else None
                result = None
            elif action == "expire_sessions":
                crm.expire_sessions(cmd.get("code", "INVALID_SESSIONID"))
                result = None
            elif action == "calls":
                result = dict(crm.calls)
            elif action == "now_local":
                result = crm.now_local()
            elif action in self.METHODS:
                result = getattr(crm, action)(**cmd)
            else:
                raise KeyError(action)
        except (KeyError, ValueError, TypeError, WsError) as e:
            request.setResponseCode(400)
            return json.dumps({"error": str(e)}).encode()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"result": result}).encode()


class _Root(Resource):
    def __init__(self, crm: FakeCrm, reactor: Any, control: bool) -> None:
        super().__init__()
        self.putChild(b"webservice.php", FakeCrmResource(crm, reactor))
        if control:
            self.putChild(b"control", ControlResource(crm))


def serve(crm: FakeCrm, reactor: Any, port: int = 0, control: bool = False) -> Any:
    """Listen on 127.0.0.1 (``port`` 0: any free one); returns the listening port
    (``.getHost().port``; ``stopListening()`` to stop)."""
    site = server.Site(_Root(crm, reactor, control))
    site.noisy = False
    site.displayTracebacks = False
    return reactor.listenTCP(port, site, interface="127.0.0.1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fake vtenext/vtiger web service")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flavour", default="vtenext", choices=("vtenext", "vtiger"))
    parser.add_argument("--server-tz", default=None)
    parser.add_argument("--admin-key", default="adminKEY123")
    parser.add_argument("--admin-tz", default=None)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    crm = FakeCrm(args.flavour, server_tz=args.server_tz, admin_key=args.admin_key,
                  admin_tz=args.admin_tz)
    port = serve(crm, reactor, args.port, control=True)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.path.insert(0, ".")
    main()
