"""The Exchange ActiveSync WBXML code pages ([MS-ASWBXML] section 2.1.2.1).

Every tag is identified by a code page (0..25) and a token (0x05..0x3F).  Names
follow the Microsoft specification (the element names used by [MS-ASCMD],
[MS-ASCNTC], [MS-ASCAL], [MS-ASTASK], ...).  Tags marked "2.5" or "deprecated"
are still listed so that the decoder accepts old clients.

Tokens the specification leaves undefined are absent (the decoder rejects them):
AirSyncBase 0x09, Calendar 0x2B-0x32 (old attachment tags), Search 0x06 and 0x16,
ComposeMail 0x0A and 0x14, Email2 0x14, Settings 0x2A, MeetingResponse 0x0D and 0x0F,
Find 0x0F, 0x10 and 0x1A-0x1F.

libwbxml (``wbxml2xml -l ACTIVESYNC``, version 0.11.8 as shipped by Debian) uses
other names for a number of tags and lacks a few; :data:`LIBWBXML_NAMES` and
:data:`LIBWBXML_MISSING` record every difference (they are checked by the tests
against the installed tool).  libwbxml additionally knows two tags the current
specification dropped, FolderHierarchy 0x18 ``Version`` and MeetingResponse 0x0D
``Version``; easync does not.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Code page number -> code page (namespace) name, as written in tags ("Page:Name").
PAGE_NAMES: tuple[str, ...] = (
    "AirSync",  # 0
    "Contacts",  # 1
    "Email",  # 2
    "AirNotify",  # 3 (obsolete)
    "Calendar",  # 4
    "Move",  # 5
    "ItemEstimate",  # 6
    "FolderHierarchy",  # 7
    "MeetingResponse",  # 8
    "Tasks",  # 9
    "ResolveRecipients",  # 10
    "ValidateCert",  # 11
    "Contacts2",  # 12
    "Ping",  # 13
    "Provision",  # 14
    "Search",  # 15
    "GAL",  # 16
    "AirSyncBase",  # 17
    "Settings",  # 18
    "DocumentLibrary",  # 19
    "ItemOperations",  # 20
    "ComposeMail",  # 21
    "Email2",  # 22
    "Notes",  # 23
    "RightsManagement",  # 24
    "Find",  # 25
)

#: Code page number -> {token: tag name}.
CODE_PAGES: dict[int, dict[int, str]] = {
    # -- 0 AirSync ---------------------------------------------------------------------
    0: {
        0x05: "Sync",
        0x06: "Responses",
        0x07: "Add",
        0x08: "Change",
        0x09: "Delete",
        0x0A: "Fetch",
        0x0B: "SyncKey",
        0x0C: "ClientId",
        0x0D: "ServerId",
        0x0E: "Status",
        0x0F: "Collection",
        0x10: "Class",
        0x11: "Version",  # deprecated
        0x12: "CollectionId",
        0x13: "GetChanges",
        0x14: "MoreAvailable",
        0x15: "WindowSize",
        0x16: "Commands",
        0x17: "Options",
        0x18: "FilterType",
        0x19: "Truncation",  # 2.5
        0x1A: "RtfTruncation",  # 2.5; libwbxml: RTFTruncation
        0x1B: "Conflict",
        0x1C: "Collections",
        0x1D: "ApplicationData",
        0x1E: "DeletesAsMoves",
        0x1F: "NotifyGUID",  # 2.5
        0x20: "Supported",
        0x21: "SoftDelete",
        0x22: "MIMESupport",
        0x23: "MIMETruncation",
        0x24: "Wait",  # 12.1
        0x25: "Limit",  # 12.1
        0x26: "Partial",  # 12.1
        0x27: "ConversationMode",  # 14.0
        0x28: "MaxItems",  # 14.0
        0x29: "HeartbeatInterval",  # 14.0
    },
    # -- 1 Contacts (POOMCONTACTS) --------------------------------------------------------
    1: {
        0x05: "Anniversary",
        0x06: "AssistantName",
        0x07: "AssistantPhoneNumber",  # libwbxml: AssistantTelephoneNumber
        0x08: "Birthday",
        0x09: "Body",  # 2.5
        0x0A: "BodySize",  # 2.5
        0x0B: "BodyTruncated",  # 2.5
        0x0C: "Business2PhoneNumber",
        0x0D: "BusinessAddressCity",  # libwbxml: BusinessCity (and so on below)
        0x0E: "BusinessAddressCountry",
        0x0F: "BusinessAddressPostalCode",
        0x10: "BusinessAddressState",
        0x11: "BusinessAddressStreet",
        0x12: "BusinessFaxNumber",
        0x13: "BusinessPhoneNumber",
        0x14: "CarPhoneNumber",
        0x15: "Categories",
        0x16: "Category",
        0x17: "Children",
        0x18: "Child",
        0x19: "CompanyName",
        0x1A: "Department",
        0x1B: "Email1Address",
        0x1C: "Email2Address",
        0x1D: "Email3Address",
        0x1E: "FileAs",
        0x1F: "FirstName",
        0x20: "Home2PhoneNumber",
        0x21: "HomeAddressCity",
        0x22: "HomeAddressCountry",
        0x23: "HomeAddressPostalCode",
        0x24: "HomeAddressState",
        0x25: "HomeAddressStreet",
        0x26: "HomeFaxNumber",
        0x27: "HomePhoneNumber",
        0x28: "JobTitle",
        0x29: "LastName",
        0x2A: "MiddleName",
        0x2B: "MobilePhoneNumber",
        0x2C: "OfficeLocation",
        0x2D: "OtherAddressCity",
        0x2E: "OtherAddressCountry",
        0x2F: "OtherAddressPostalCode",
        0x30: "OtherAddressState",
        0x31: "OtherAddressStreet",
        0x32: "PagerNumber",
        0x33: "RadioPhoneNumber",
        0x34: "Spouse",
        0x35: "Suffix",
        0x36: "Title",
        0x37: "WebPage",
        0x38: "YomiCompanyName",
        0x39: "YomiFirstName",
        0x3A: "YomiLastName",
        0x3B: "CompressedRTF",  # 2.5
        0x3C: "Picture",
        0x3D: "Alias",  # 14.0
        0x3E: "WeightedRank",  # 14.0
    },
    # -- 2 Email (POOMMAIL) ---------------------------------------------------------------
    2: {
        0x05: "Attachment",  # 2.5 (AirSyncBase since 12.0)
        0x06: "Attachments",  # 2.5
        0x07: "AttName",  # 2.5
        0x08: "AttSize",  # 2.5
        0x09: "Att0Id",  # 2.5; the spec spells it with a zero; libwbxml: AttOId
        0x0A: "AttMethod",  # 2.5
        0x0B: "AttRemoved",  # 2.5
        0x0C: "Body",  # 2.5
        0x0D: "BodySize",  # 2.5
        0x0E: "BodyTruncated",  # 2.5
        0x0F: "DateReceived",
        0x10: "DisplayName",  # 2.5
        0x11: "DisplayTo",
        0x12: "Importance",
        0x13: "MessageClass",
        0x14: "Subject",
        0x15: "Read",
        0x16: "To",
        0x17: "Cc",
        0x18: "From",
        0x19: "Reply-To",
        0x1A: "AllDayEvent",
        0x1B: "Categories",  # 14.0
        0x1C: "Category",  # 14.0
        0x1D: "DtStamp",  # libwbxml: DTStamp
        0x1E: "EndTime",
        0x1F: "InstanceType",
        0x20: "BusyStatus",
        0x21: "Location",  # up to 14.1
        0x22: "MeetingRequest",
        0x23: "Organizer",
        0x24: "RecurrenceId",
        0x25: "Reminder",
        0x26: "ResponseRequested",
        0x27: "Recurrences",
        0x28: "Recurrence",
        0x29: "Type",  # libwbxml: Recurrence_Type (and so on for the 8 recurrence children)
        0x2A: "Until",
        0x2B: "Occurrences",
        0x2C: "Interval",
        0x2D: "DayOfWeek",
        0x2E: "DayOfMonth",
        0x2F: "WeekOfMonth",
        0x30: "MonthOfYear",
        0x31: "StartTime",
        0x32: "Sensitivity",
        0x33: "TimeZone",
        0x34: "GlobalObjId",
        0x35: "ThreadTopic",
        0x36: "MIMEData",  # 2.5
        0x37: "MIMETruncated",  # 2.5
        0x38: "MIMESize",  # 2.5
        0x39: "InternetCPID",
        0x3A: "Flag",  # 12.0
        0x3B: "FlagStatus",
        0x3C: "ContentClass",
        0x3D: "FlagType",
        0x3E: "CompleteTime",
        0x3F: "DisallowNewTimeProposal",  # 14.0
    },
    # -- 3 AirNotify (no longer in use; tokens 0x05-0x17 are defined) ----------------------
    3: {
        0x05: "Notify",
        0x06: "Notification",
        0x07: "Version",
        0x08: "Lifetime",  # libwbxml: LifeTime
        0x09: "DeviceInfo",
        0x0A: "Enable",
        0x0B: "Folder",
        0x0C: "ServerEntryId",  # libwbxml: ServerId
        0x0D: "DeviceAddress",
        0x0E: "ValidCarrierProfiles",
        0x0F: "CarrierProfile",
        0x10: "Status",
        0x11: "Responses",
        0x12: "Devices",
        0x13: "Device",
        0x14: "Id",
        0x15: "Expiry",
        0x16: "NotifyGUID",
        0x17: "DeviceFriendlyName",
    },
    # -- 4 Calendar (POOMCAL) -------------------------------------------------------------
    4: {
        0x05: "Timezone",  # libwbxml: TimeZone
        0x06: "AllDayEvent",
        0x07: "Attendees",
        0x08: "Attendee",
        0x09: "Email",  # libwbxml: Attendee_Email
        0x0A: "Name",  # libwbxml: Attendee_Name
        0x0B: "Body",  # 2.5
        0x0C: "BodyTruncated",  # 2.5
        0x0D: "BusyStatus",
        0x0E: "Categories",
        0x0F: "Category",
        0x10: "CompressedRTF",  # 2.5; libwbxml: Compressed_RTF
        0x11: "DtStamp",  # libwbxml: DTStamp
        0x12: "EndTime",
        0x13: "Exception",
        0x14: "Exceptions",
        0x15: "Deleted",  # libwbxml: Exception_Deleted
        0x16: "ExceptionStartTime",  # up to 14.1; libwbxml: Exception_StartTime
        0x17: "Location",  # up to 14.1 (AirSyncBase:Location since 16.0)
        0x18: "MeetingStatus",
        0x19: "OrganizerEmail",  # libwbxml: Organizer_Email
        0x1A: "OrganizerName",  # libwbxml: Organizer_Name
        0x1B: "Recurrence",
        0x1C: "Type",  # libwbxml: Recurrence_Type (and so on for the recurrence children)
        0x1D: "Until",
        0x1E: "Occurrences",
        0x1F: "Interval",
        0x20: "DayOfWeek",
        0x21: "DayOfMonth",
        0x22: "WeekOfMonth",
        0x23: "MonthOfYear",
        0x24: "Reminder",
        0x25: "Sensitivity",
        0x26: "Subject",
        0x27: "StartTime",
        0x28: "UID",
        0x29: "AttendeeStatus",  # 12.0; libwbxml: Attendee_Status
        0x2A: "AttendeeType",  # 12.0; libwbxml: Attendee_Type
        0x33: "DisallowNewTimeProposal",  # 14.0
        0x34: "ResponseRequested",
        0x35: "AppointmentReplyTime",
        0x36: "ResponseType",
        0x37: "CalendarType",
        0x38: "IsLeapMonth",
        0x39: "FirstDayOfWeek",  # 14.1
        0x3A: "OnlineMeetingConfLink",
        0x3B: "OnlineMeetingExternalLink",
        0x3C: "ClientUid",  # 16.0
    },
    # -- 5 Move ---------------------------------------------------------------------------
    5: {
        0x05: "MoveItems",
        0x06: "Move",
        0x07: "SrcMsgId",
        0x08: "SrcFldId",
        0x09: "DstFldId",
        0x0A: "Response",
        0x0B: "Status",
        0x0C: "DstMsgId",
    },
    # -- 6 ItemEstimate (GetItemEstimate) -------------------------------------------------
    6: {
        0x05: "GetItemEstimate",
        0x06: "Version",  # 12.1 only
        0x07: "Collections",
        0x08: "Collection",
        0x09: "Class",  # up to 12.1
        0x0A: "CollectionId",
        0x0B: "DateTime",  # 12.1 only
        0x0C: "Estimate",
        0x0D: "Response",
        0x0E: "Status",
    },
    # -- 7 FolderHierarchy ----------------------------------------------------------------
    7: {
        0x05: "Folders",  # up to 12.1
        0x06: "Folder",  # up to 12.1
        0x07: "DisplayName",
        0x08: "ServerId",
        0x09: "ParentId",
        0x0A: "Type",
        0x0B: "Response",  # deprecated
        0x0C: "Status",
        0x0D: "ContentClass",  # deprecated
        0x0E: "Changes",
        0x0F: "Add",
        0x10: "Delete",
        0x11: "Update",
        0x12: "SyncKey",
        0x13: "FolderCreate",
        0x14: "FolderDelete",
        0x15: "FolderUpdate",
        0x16: "FolderSync",
        0x17: "Count",
    },
    # -- 8 MeetingResponse ----------------------------------------------------------------
    8: {
        0x05: "CalendarId",
        0x06: "CollectionId",
        0x07: "MeetingResponse",
        0x08: "RequestId",
        0x09: "Request",
        0x0A: "Result",
        0x0B: "Status",
        0x0C: "UserResponse",
        0x0E: "InstanceId",  # 14.1
        0x10: "ProposedStartTime",  # 16.1; not in libwbxml 0.11.8
        0x11: "ProposedEndTime",  # 16.1; not in libwbxml 0.11.8
        0x12: "SendResponse",  # 16.0
    },
    # -- 9 Tasks (POOMTASKS) --------------------------------------------------------------
    9: {
        0x05: "Body",  # 2.5
        0x06: "BodySize",  # 2.5
        0x07: "BodyTruncated",  # 2.5
        0x08: "Categories",
        0x09: "Category",
        0x0A: "Complete",
        0x0B: "DateCompleted",
        0x0C: "DueDate",
        0x0D: "UtcDueDate",  # libwbxml: UTCDueDate
        0x0E: "Importance",
        0x0F: "Recurrence",
        0x10: "Type",  # libwbxml: Recurrence_Type (and so on up to 0x1A)
        0x11: "Start",
        0x12: "Until",
        0x13: "Occurrences",
        0x14: "Interval",
        0x15: "DayOfMonth",
        0x16: "DayOfWeek",
        0x17: "WeekOfMonth",
        0x18: "MonthOfYear",
        0x19: "Regenerate",
        0x1A: "DeadOccur",
        0x1B: "ReminderSet",
        0x1C: "ReminderTime",
        0x1D: "Sensitivity",
        0x1E: "StartDate",
        0x1F: "UtcStartDate",  # libwbxml: UTCStartDate
        0x20: "Subject",
        0x21: "CompressedRTF",  # 2.5
        0x22: "OrdinalDate",  # 12.0
        0x23: "SubOrdinalDate",  # 12.0
        0x24: "CalendarType",  # 14.0
        0x25: "IsLeapMonth",  # 14.0
        0x26: "FirstDayOfWeek",  # 14.1
    },
    # -- 10 ResolveRecipients -------------------------------------------------------------
    10: {
        0x05: "ResolveRecipients",
        0x06: "Response",
        0x07: "Status",
        0x08: "Type",
        0x09: "Recipient",
        0x0A: "DisplayName",
        0x0B: "EmailAddress",
        0x0C: "Certificates",
        0x0D: "Certificate",
        0x0E: "MiniCertificate",
        0x0F: "Options",
        0x10: "To",
        0x11: "CertificateRetrieval",
        0x12: "RecipientCount",
        0x13: "MaxCertificates",
        0x14: "MaxAmbiguousRecipients",
        0x15: "CertificateCount",
        0x16: "Availability",  # 14.0
        0x17: "StartTime",
        0x18: "EndTime",
        0x19: "MergedFreeBusy",
        0x1A: "Picture",  # 14.1
        0x1B: "MaxSize",
        0x1C: "Data",
        0x1D: "MaxPictures",
    },
    # -- 11 ValidateCert ------------------------------------------------------------------
    11: {
        0x05: "ValidateCert",
        0x06: "Certificates",
        0x07: "Certificate",
        0x08: "CertificateChain",
        0x09: "CheckCRL",
        0x0A: "Status",
    },
    # -- 12 Contacts2 (POOMCONTACTS2) -----------------------------------------------------
    12: {
        0x05: "CustomerId",
        0x06: "GovernmentId",
        0x07: "IMAddress",
        0x08: "IMAddress2",
        0x09: "IMAddress3",
        0x0A: "ManagerName",
        0x0B: "CompanyMainPhone",
        0x0C: "AccountName",
        0x0D: "NickName",
        0x0E: "MMS",
    },
    # -- 13 Ping --------------------------------------------------------------------------
    13: {
        0x05: "Ping",
        0x06: "AutdState",  # not used by the protocol
        0x07: "Status",
        0x08: "HeartbeatInterval",
        0x09: "Folders",
        0x0A: "Folder",
        0x0B: "Id",
        0x0C: "Class",
        0x0D: "MaxFolders",
    },
    # -- 14 Provision ---------------------------------------------------------------------
    14: {
        0x05: "Provision",
        0x06: "Policies",
        0x07: "Policy",
        0x08: "PolicyType",
        0x09: "PolicyKey",
        0x0A: "Data",
        0x0B: "Status",
        0x0C: "RemoteWipe",
        0x0D: "EASProvisionDoc",
        0x0E: "DevicePasswordEnabled",
        0x0F: "AlphanumericDevicePasswordRequired",
        # 12.0 called 0x10 DeviceEncryptionEnabled; libwbxml decodes it under that name.
        0x10: "RequireStorageCardEncryption",
        0x11: "PasswordRecoveryEnabled",
        0x12: "DocumentBrowseEnabled",  # deprecated
        0x13: "AttachmentsEnabled",
        0x14: "MinDevicePasswordLength",
        0x15: "MaxInactivityTimeDeviceLock",
        0x16: "MaxDevicePasswordFailedAttempts",
        0x17: "MaxAttachmentSize",
        0x18: "AllowSimpleDevicePassword",
        0x19: "DevicePasswordExpiration",
        0x1A: "DevicePasswordHistory",
        0x1B: "AllowStorageCard",
        0x1C: "AllowCamera",
        0x1D: "RequireDeviceEncryption",
        0x1E: "AllowUnsignedApplications",
        0x1F: "AllowUnsignedInstallationPackages",
        0x20: "MinDevicePasswordComplexCharacters",
        0x21: "AllowWiFi",
        0x22: "AllowTextMessaging",
        0x23: "AllowPOPIMAPEmail",
        0x24: "AllowBluetooth",
        0x25: "AllowIrDA",
        0x26: "RequireManualSyncWhenRoaming",
        0x27: "AllowDesktopSync",
        0x28: "MaxCalendarAgeFilter",
        0x29: "AllowHTMLEmail",
        0x2A: "MaxEmailAgeFilter",
        0x2B: "MaxEmailBodyTruncationSize",
        0x2C: "MaxEmailHTMLBodyTruncationSize",
        0x2D: "RequireSignedSMIMEMessages",
        0x2E: "RequireEncryptedSMIMEMessages",
        0x2F: "RequireSignedSMIMEAlgorithm",
        0x30: "RequireEncryptionSMIMEAlgorithm",
        0x31: "AllowSMIMEEncryptionAlgorithmNegotiation",
        0x32: "AllowSMIMESoftCerts",
        0x33: "AllowBrowser",
        0x34: "AllowConsumerEmail",
        0x35: "AllowRemoteDesktop",
        0x36: "AllowInternetSharing",
        0x37: "UnapprovedInROMApplicationList",
        0x38: "ApplicationName",
        0x39: "ApprovedApplicationList",
        0x3A: "Hash",
        0x3B: "AccountOnlyRemoteWipe",  # 16.1; not in libwbxml 0.11.8
    },
    # -- 15 Search ------------------------------------------------------------------------
    15: {
        0x05: "Search",
        0x07: "Store",
        0x08: "Name",
        0x09: "Query",
        0x0A: "Options",
        0x0B: "Range",
        0x0C: "Status",
        0x0D: "Response",
        0x0E: "Result",
        0x0F: "Properties",
        0x10: "Total",
        0x11: "EqualTo",
        0x12: "Value",
        0x13: "And",
        0x14: "Or",
        0x15: "FreeText",
        0x17: "DeepTraversal",
        0x18: "LongId",
        0x19: "RebuildResults",
        0x1A: "LessThan",
        0x1B: "GreaterThan",
        0x1C: "Schema",
        0x1D: "Supported",
        0x1E: "UserName",  # 12.1
        0x1F: "Password",
        0x20: "ConversationId",  # 14.0
        0x21: "Picture",  # 14.1
        0x22: "MaxSize",
        0x23: "MaxPictures",
    },
    # -- 16 GAL ---------------------------------------------------------------------------
    16: {
        0x05: "DisplayName",
        0x06: "Phone",
        0x07: "Office",
        0x08: "Title",
        0x09: "Company",
        0x0A: "Alias",
        0x0B: "FirstName",
        0x0C: "LastName",
        0x0D: "HomePhone",
        0x0E: "MobilePhone",
        0x0F: "EmailAddress",
        0x10: "Picture",  # 14.1
        0x11: "Status",
        0x12: "Data",
    },
    # -- 17 AirSyncBase -------------------------------------------------------------------
    17: {
        0x05: "BodyPreference",
        0x06: "Type",
        0x07: "TruncationSize",
        0x08: "AllOrNone",
        0x0A: "Body",
        0x0B: "Data",
        0x0C: "EstimatedDataSize",
        0x0D: "Truncated",
        0x0E: "Attachments",
        0x0F: "Attachment",
        0x10: "DisplayName",
        0x11: "FileReference",
        0x12: "Method",
        0x13: "ContentId",
        0x14: "ContentLocation",
        0x15: "IsInline",
        0x16: "NativeBodyType",
        0x17: "ContentType",
        0x18: "Preview",  # 14.0
        0x19: "BodyPartPreference",  # 14.1
        0x1A: "BodyPart",
        0x1B: "Status",
        0x1C: "Add",  # 16.0
        0x1D: "Delete",
        0x1E: "ClientId",
        0x1F: "Content",
        0x20: "Location",
        0x21: "Annotation",
        0x22: "Street",
        0x23: "City",
        0x24: "State",
        0x25: "Country",
        0x26: "PostalCode",
        0x27: "Latitude",
        0x28: "Longitude",
        0x29: "Accuracy",
        0x2A: "Altitude",
        0x2B: "AltitudeAccuracy",
        0x2C: "LocationUri",
        0x2D: "InstanceId",
    },
    # -- 18 Settings ----------------------------------------------------------------------
    18: {
        0x05: "Settings",
        0x06: "Status",
        0x07: "Get",
        0x08: "Set",
        0x09: "Oof",
        0x0A: "OofState",
        0x0B: "StartTime",
        0x0C: "EndTime",
        0x0D: "OofMessage",
        0x0E: "AppliesToInternal",
        0x0F: "AppliesToExternalKnown",
        0x10: "AppliesToExternalUnknown",
        0x11: "Enabled",
        0x12: "ReplyMessage",
        0x13: "BodyType",
        0x14: "DevicePassword",
        0x15: "Password",
        0x16: "DeviceInformation",
        0x17: "Model",
        0x18: "IMEI",
        0x19: "FriendlyName",
        0x1A: "OS",
        0x1B: "OSLanguage",
        0x1C: "PhoneNumber",
        0x1D: "UserInformation",
        0x1E: "EmailAddresses",
        0x1F: "SmtpAddress",
        0x20: "UserAgent",  # 12.1
        0x21: "EnableOutboundSMS",  # 14.0
        0x22: "MobileOperator",
        0x23: "PrimarySmtpAddress",  # 14.1
        0x24: "Accounts",
        0x25: "Account",
        0x26: "AccountId",
        0x27: "AccountName",
        0x28: "UserDisplayName",
        0x29: "SendDisabled",
        0x2B: "RightsManagementInformation",  # 14.1; libwbxml: ihsManagementInformation
    },
    # -- 19 DocumentLibrary ---------------------------------------------------------------
    19: {
        0x05: "LinkId",
        0x06: "DisplayName",
        0x07: "IsFolder",
        0x08: "CreationDate",
        0x09: "LastModifiedDate",
        0x0A: "IsHidden",
        0x0B: "ContentLength",
        0x0C: "ContentType",
    },
    # -- 20 ItemOperations ----------------------------------------------------------------
    20: {
        0x05: "ItemOperations",
        0x06: "Fetch",
        0x07: "Store",
        0x08: "Options",
        0x09: "Range",
        0x0A: "Total",
        0x0B: "Properties",
        0x0C: "Data",
        0x0D: "Status",
        0x0E: "Response",
        0x0F: "Version",
        0x10: "Schema",
        0x11: "Part",
        0x12: "EmptyFolderContents",
        0x13: "DeleteSubFolders",
        0x14: "UserName",  # 12.1
        0x15: "Password",
        0x16: "Move",  # 14.0
        0x17: "DstFldId",
        0x18: "ConversationId",
        0x19: "MoveAlways",
    },
    # -- 21 ComposeMail -------------------------------------------------------------------
    21: {
        0x05: "SendMail",
        0x06: "SmartForward",
        0x07: "SmartReply",
        0x08: "SaveInSentItems",
        0x09: "ReplaceMime",
        0x0B: "Source",
        0x0C: "FolderId",
        0x0D: "ItemId",
        0x0E: "LongId",
        0x0F: "InstanceId",
        0x10: "MIME",
        0x11: "ClientId",
        0x12: "Status",
        0x13: "AccountId",  # 14.1
        0x15: "Forwardees",  # 16.0
        0x16: "Forwardee",
        0x17: "Name",  # libwbxml: ForwardeeName
        0x18: "Email",  # libwbxml: ForwardeeEmail
    },
    # -- 22 Email2 (POOMMAIL2) ------------------------------------------------------------
    22: {
        0x05: "UmCallerID",
        0x06: "UmUserNotes",
        0x07: "UmAttDuration",
        0x08: "UmAttOrder",
        0x09: "ConversationId",
        0x0A: "ConversationIndex",
        0x0B: "LastVerbExecuted",
        0x0C: "LastVerbExecutionTime",
        0x0D: "ReceivedAsBcc",
        0x0E: "Sender",
        0x0F: "CalendarType",
        0x10: "IsLeapMonth",
        0x11: "AccountId",  # 14.1
        0x12: "FirstDayOfWeek",
        0x13: "MeetingMessageType",
        0x15: "IsDraft",  # 16.0
        0x16: "Bcc",
        0x17: "Send",
    },
    # -- 23 Notes -------------------------------------------------------------------------
    23: {
        0x05: "Subject",
        0x06: "MessageClass",
        0x07: "LastModifiedDate",
        0x08: "Categories",
        0x09: "Category",
    },
    # -- 24 RightsManagement (14.1) -------------------------------------------------------
    24: {
        0x05: "RightsManagementSupport",
        0x06: "RightsManagementTemplates",
        0x07: "RightsManagementTemplate",
        0x08: "RightsManagementLicense",
        0x09: "EditAllowed",
        0x0A: "ReplyAllowed",
        0x0B: "ReplyAllAllowed",
        0x0C: "ForwardAllowed",
        0x0D: "ModifyRecipientsAllowed",
        0x0E: "ExtractAllowed",
        0x0F: "PrintAllowed",
        0x10: "ExportAllowed",
        0x11: "ProgrammaticAccessAllowed",
        0x12: "Owner",  # libwbxml: RMOwner
        0x13: "ContentExpiryDate",
        0x14: "TemplateID",
        0x15: "TemplateName",
        0x16: "TemplateDescription",
        0x17: "ContentOwner",
        0x18: "RemoveRightsManagementProtection",  # libwbxml: RemoveRightsManagementDistribution
    },
    # -- 25 Find (16.1; the whole page is missing from libwbxml 0.11.8) --------------------
    25: {
        0x05: "Find",
        0x06: "SearchId",
        0x07: "ExecuteSearch",
        0x08: "MailBoxSearchCriterion",
        0x09: "Query",
        0x0A: "Status",
        0x0B: "FreeText",
        0x0C: "Options",
        0x0D: "Range",
        0x0E: "DeepTraversal",
        0x11: "Response",
        0x12: "Result",
        0x13: "Properties",
        0x14: "Preview",
        0x15: "HasAttachments",
        0x16: "Total",
        0x17: "DisplayCc",
        0x18: "DisplayBcc",
        0x19: "GalSearchCriterion",
        # [MS-ASWBXML] and libwbxml (newer than 0.11.8) give 0x20-0x22; pyactivesync uses
        # 0x1A-0x1C, which we do not accept.
        0x20: "MaxPictures",
        0x21: "MaxSize",
        0x22: "Picture",
    },
}


def _build() -> tuple[dict[str, tuple[int, int]], tuple[tuple[str | None, ...], ...]]:
    by_tag: dict[str, tuple[int, int]] = {}
    by_code: list[tuple[str | None, ...]] = []
    for page, page_name in enumerate(PAGE_NAMES):
        row: list[str | None] = [None] * 64
        for token, name in CODE_PAGES[page].items():
            if not 0x05 <= token <= 0x3F:
                raise AssertionError(f"bad token {page}/{token:#x}")
            tag = f"{page_name}:{name}"
            if tag in by_tag:
                raise AssertionError(f"duplicate tag {tag}")
            by_tag[tag] = (page, token)
            row[token] = tag
        by_code.append(tuple(row))
    return by_tag, tuple(by_code)


#: "Page:Name" -> (code page, token).
TAG_CODES: Mapping[str, tuple[int, int]]
#: TOKENS[page][token] -> "Page:Name" or None for an undefined token.
TOKENS: tuple[tuple[str | None, ...], ...]
TAG_CODES, TOKENS = _build()

#: Tags whose name in libwbxml's ACTIVESYNC tables (0.11.8) differs from ours:
#: "Page:Name" -> libwbxml's local name (same page).
LIBWBXML_NAMES: dict[str, str] = {
    "AirSync:RtfTruncation": "RTFTruncation",
    "Contacts:AssistantPhoneNumber": "AssistantTelephoneNumber",
    "Email:Att0Id": "AttOId",
    "Email:DtStamp": "DTStamp",
    "AirNotify:Lifetime": "LifeTime",
    "AirNotify:ServerEntryId": "ServerId",
    "Calendar:Timezone": "TimeZone",
    "Calendar:Email": "Attendee_Email",
    "Calendar:Name": "Attendee_Name",
    "Calendar:CompressedRTF": "Compressed_RTF",
    "Calendar:DtStamp": "DTStamp",
    "Calendar:Deleted": "Exception_Deleted",
    "Calendar:ExceptionStartTime": "Exception_StartTime",
    "Calendar:OrganizerEmail": "Organizer_Email",
    "Calendar:OrganizerName": "Organizer_Name",
    "Calendar:AttendeeStatus": "Attendee_Status",
    "Calendar:AttendeeType": "Attendee_Type",
    "Tasks:UtcDueDate": "UTCDueDate",
    "Tasks:UtcStartDate": "UTCStartDate",
    "Provision:RequireStorageCardEncryption": "DeviceEncryptionEnabled",
    "Settings:RightsManagementInformation": "ihsManagementInformation",
    "ComposeMail:Name": "ForwardeeName",
    "ComposeMail:Email": "ForwardeeEmail",
    "RightsManagement:Owner": "RMOwner",
    "RightsManagement:RemoveRightsManagementProtection": "RemoveRightsManagementDistribution",
}
for _addr in ("City", "Country", "PostalCode", "State", "Street"):
    for _kind in ("Business", "Home", "Other"):
        LIBWBXML_NAMES[f"Contacts:{_kind}Address{_addr}"] = f"{_kind}{_addr}"
for _name in ("Type", "Until", "Occurrences", "Interval", "DayOfWeek", "DayOfMonth",
              "WeekOfMonth", "MonthOfYear"):
    LIBWBXML_NAMES[f"Email:{_name}"] = f"Recurrence_{_name}"
    LIBWBXML_NAMES[f"Calendar:{_name}"] = f"Recurrence_{_name}"
for _name in ("Type", "Start", "Until", "Occurrences", "Interval", "DayOfMonth", "DayOfWeek",
              "WeekOfMonth", "MonthOfYear", "Regenerate", "DeadOccur"):
    LIBWBXML_NAMES[f"Tasks:{_name}"] = f"Recurrence_{_name}"

#: Tags libwbxml 0.11.8 does not know at all.
LIBWBXML_MISSING: frozenset[str] = frozenset(
    {
        "MeetingResponse:ProposedStartTime",
        "MeetingResponse:ProposedEndTime",
        "Provision:AccountOnlyRemoteWipe",
    }
    | {f"Find:{name}" for name in CODE_PAGES[25].values()}
)

#: Namespace URIs libwbxml prints (``xmlns="AirSync:"``); they follow our page names
#: except for pages 6 and 16.
LIBWBXML_NAMESPACES: tuple[str, ...] = tuple(
    {"ItemEstimate": "GetItemEstimate:", "GAL": "Gal:"}.get(name, name + ":")
    for name in PAGE_NAMES
)

#: Tags libwbxml writes as OPAQUE and renders as base64 in XML (WBXML_TAG_OPTION_BINARY).
LIBWBXML_BINARY: frozenset[str] = frozenset(
    {
        "ResolveRecipients:Data",
        "Search:ConversationId",
        "GAL:Data",
        "AirSyncBase:Content",
        "ItemOperations:ConversationId",
        "ComposeMail:MIME",
        "Email2:ConversationId",
        "Email2:ConversationIndex",
    }
)

del _addr, _kind, _name
