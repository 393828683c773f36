<#
.SYNOPSIS
    Posts a SCOM alert to healthset-responder, signed Standard-Webhooks style. Run it from a SCOM command
    notification channel.

.DESCRIPTION
    SCOM has no webhook of its own. A command notification channel runs this script with the alert's variables as
    parameters; the script builds the JSON that POST /v1/alerts/scom reads (the camelCase field set of the widely used
    OpsGenie SCOM script, "Not Present" for every value SCOM did not give), signs it with the webhook secret and posts
    it. Retries cover a service that is restarting or briefly unreachable; what still fails is written to the
    Application event log (or, when the event source is not registered, to a log file), so a lost alert is never
    silent.

    Works on Windows PowerShell 5.1 (the management server's own powershell.exe) and on PowerShell 7.

    THE SECRET
    The webhook secret (whsec_...) is never written in this script or on the command line. The script reads it from
    -SecretFile (default: %ProgramData%\healthset-responder\webhook-secret.txt), else from the environment variable
    HSR_WEBHOOK_SECRET. Give the file to the account SCOM runs the command as (normally the management server action
    account) and to administrators only:

        icacls "$env:ProgramData\healthset-responder\webhook-secret.txt" /inheritance:r /grant:r "CONTOSO\svc-scom-msaa:R" "BUILTIN\Administrators:F"

    On the healthset-responder side the same secret is a standard-webhooks sender:

        [[senders]]
        name = "scom"
        secrets = ["whsec_..."]

    THE SIGNATURE (https://www.standardwebhooks.com/)
        webhook-id         a new GUID per alert notification, kept across retries, so that a retry the service
                           already stored is answered "duplicate" rather than stored twice
        webhook-timestamp  Unix seconds at each attempt (the service refuses timestamps more than 5 minutes off:
                           keep the management server's clock synchronised)
        webhook-signature  v1,<base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>" keyed with the base64-decoded
                           part of the secret after "whsec_">
    The body is sent as the exact UTF-8 bytes that were signed.

    EVENT LOG
    Failures go to the Application log under the source "healthset-responder" when that source exists. Register it
    once, as an administrator, on every management server of the notification resource pool:

        New-EventLog -LogName Application -Source healthset-responder

    Without it, failures are appended to -LogFile (default: %ProgramData%\healthset-responder\scom-notification-channel.log).
    Event ids: 1001 the alert could not be delivered; 1002 the service refused it (4xx, not retried); 1003 the
    script could not run at all (no secret, bad parameters).

.PARAMETER Url
    The service's SCOM intake route, e.g. http://healthset-responder.example.internal:8080/v1/alerts/scom

.PARAMETER ReadAlertFromScom
    Read the alert itself from SCOM (Get-SCOMAlert -Id, from the OperationsManager module installed on management
    servers) and take its name, description, path, resolution state, severity, priority, times and custom fields from
    there, falling back to the parameters. Use it when alert descriptions contain double quotes: SCOM pastes values
    into the command line as they are, and a double quote inside a value cuts that value short.

.EXAMPLE
    SCOM > Administration > Notifications > Channels > New > Command:

    Full path of the command file:
        C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe

    Command line parameters (one line; the -Url is your service's):
        -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "C:\Program Files\healthset-responder\scom-notification-channel.ps1" -Url "http://healthset-responder.example.internal:8080/v1/alerts/scom" -AlertId "$Data[Default='Not Present']/Context/DataItem/AlertId$" -AlertName "$Data[Default='Not Present']/Context/DataItem/AlertName$" -AlertDescription "$Data[Default='Not Present']/Context/DataItem/AlertDescription$" -ResolutionState "$Data[Default='Not Present']/Context/DataItem/ResolutionState$" -ResolutionStateName "$Data[Default='Not Present']/Context/DataItem/ResolutionStateName$" -ResolutionStateLastModified "$Data[Default='Not Present']/Context/DataItem/ResolutionStateLastModified$" -Severity "$Data[Default='Not Present']/Context/DataItem/Severity$" -Priority "$Data[Default='Not Present']/Context/DataItem/Priority$" -Owner "$Data[Default='Not Present']/Context/DataItem/Owner$" -RepeatCount "$Data[Default='Not Present']/Context/DataItem/RepeatCount$" -Category "$Data[Default='Not Present']/Context/DataItem/Category$" -CreatedByMonitor "$Data[Default='Not Present']/Context/DataItem/CreatedByMonitor$" -ManagedEntitySource "$Data[Default='Not Present']/Context/DataItem/ManagedEntityDisplayName$" -WorkflowId "$Data[Default='Not Present']/Context/DataItem/WorkflowId$" -LastModified "$Data[Default='Not Present']/Context/DataItem/LastModified$" -TimeRaised "$Data[Default='Not Present']/Context/DataItem/TimeRaised$" -TicketId "$Data[Default='Not Present']/Context/DataItem/TicketId$" -DataItemCreateTime "$Data[Default='Not Present']/Context/DataItem/DataItemCreateTime$" -ManagedEntityPath "$Data[Default='Not Present']/Context/DataItem/ManagedEntityPath$" -ManagedEntityGuid "$Data[Default='Not Present']/Context/DataItem/ManagedEntity$" -TimeAdded "$Data[Default='Not Present']/Context/DataItem/TimeAdded$" -CustomField1 "$Data[Default='Not Present']/Context/DataItem/Custom1$" -CustomField2 "$Data[Default='Not Present']/Context/DataItem/Custom2$" -CustomField3 "$Data[Default='Not Present']/Context/DataItem/Custom3$" -CustomField4 "$Data[Default='Not Present']/Context/DataItem/Custom4$" -CustomField5 "$Data[Default='Not Present']/Context/DataItem/Custom5$" -CustomField6 "$Data[Default='Not Present']/Context/DataItem/Custom6$" -CustomField7 "$Data[Default='Not Present']/Context/DataItem/Custom7$" -CustomField8 "$Data[Default='Not Present']/Context/DataItem/Custom8$" -CustomField9 "$Data[Default='Not Present']/Context/DataItem/Custom9$" -CustomField10 "$Data[Default='Not Present']/Context/DataItem/Custom10$"

    Startup folder for the command line:
        C:\Program Files\healthset-responder

    Use -File, never -Command: with -File every value reaches the script as plain text, while -Command would run
    alert text as PowerShell.

.EXAMPLE
    A test from a PowerShell prompt on the management server, as the account SCOM runs the command as:

    .\scom-notification-channel.ps1 -Url http://healthset-responder.example.internal:8080/v1/alerts/scom -AlertId "{$([guid]::NewGuid())}" -AlertName "ActiveSync health set unhealthy (ActiveSyncCTPMonitor)" -AlertDescription "test _Mbx:MBX01.contoso.com" -ResolutionStateName New -ManagedEntityPath CAS01.contoso.com -Verbose

.NOTES
    Exit code 0: the service answered 202. 1: it refused the alert (4xx). 2: it could not be reached or kept
    answering 5xx after every attempt. 3: the script could not run (no secret, bad parameters).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string] $Url,

    [string] $AlertId = 'Not Present',
    [string] $AlertName = 'Not Present',
    [string] $AlertDescription = 'Not Present',
    # The resolution state's number (0 New, 255 Closed) and name; a notice whose number is 255 is sent as "Closed"
    # whatever the name's language.
    [string] $ResolutionState = 'Not Present',
    [string] $ResolutionStateName = 'Not Present',
    [string] $ResolutionStateLastModified = 'Not Present',
    [string] $Priority = 'Not Present',
    [string] $Owner = 'Not Present',
    [string] $RepeatCount = 'Not Present',
    [string] $Severity = 'Not Present',
    [string] $Category = 'Not Present',
    [string] $CreatedByMonitor = 'Not Present',
    [string] $ManagedEntitySource = 'Not Present',
    [string] $WorkflowId = 'Not Present',
    [string] $LastModified = 'Not Present',
    # SCOM's TimeRaised is UTC; it is sent as ISO 8601 (yyyy-MM-ddTHH:mm:ssZ) when it reads as a date.
    [string] $TimeRaised = 'Not Present',
    [string] $TicketId = 'Not Present',
    [string] $DataItemCreateTime = 'Not Present',
    [string] $ManagedEntityPath = 'Not Present',
    [string] $ManagedEntityGuid = 'Not Present',
    [string] $TimeAdded = 'Not Present',
    [string] $MpElement = 'Not Present',
    [string] $CustomField1 = 'Not Present',
    [string] $CustomField2 = 'Not Present',
    [string] $CustomField3 = 'Not Present',
    [string] $CustomField4 = 'Not Present',
    [string] $CustomField5 = 'Not Present',
    [string] $CustomField6 = 'Not Present',
    [string] $CustomField7 = 'Not Present',
    [string] $CustomField8 = 'Not Present',
    [string] $CustomField9 = 'Not Present',
    [string] $CustomField10 = 'Not Present',

    [switch] $ReadAlertFromScom,

    # Where the whsec_ secret is read from; HSR_WEBHOOK_SECRET is used when this file does not exist.
    [string] $SecretFile = (Join-Path $env:ProgramData 'healthset-responder\webhook-secret.txt'),
    [string] $LogFile = (Join-Path $env:ProgramData 'healthset-responder\scom-notification-channel.log'),
    [string] $EventSource = 'healthset-responder',

    # Attempts in all (the first and the retries), the wait before the first retry (doubled each time) and the
    # timeout of each attempt. The defaults give up after a little over a minute at worst.
    [ValidateRange(1, 10)] [int] $Attempts = 4,
    [ValidateRange(1, 300)] [int] $RetryDelaySeconds = 2,
    [ValidateRange(1, 300)] [int] $TimeoutSeconds = 15
)

# Version 1: no unset variables. (Version 2 would also fail on an alert property a SCOM version lacks.)
Set-StrictMode -Version 1.0
$ErrorActionPreference = 'Stop'

# Writes a failure where an operator will find it: the Application event log when the source is registered, else
# the log file. Never the secret, the signature or the body: the alert id says which alert it was.
function Write-Failure {
    param([string] $Message, [int] $EventId, [string] $EntryType = 'Error')
    $line = '{0} {1} {2}' -f (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ'), $EntryType.ToUpperInvariant(), $Message
    Write-Verbose $line
    try {
        if ([System.Diagnostics.EventLog]::SourceExists($EventSource)) {
            Write-EventLog -LogName Application -Source $EventSource -EventId $EventId -EntryType $EntryType -Message $Message
            return
        }
    } catch {
        # SourceExists needs to read every event log and may be refused; fall through to the file.
    }
    try {
        $directory = Split-Path -Parent $LogFile
        if ($directory -and -not (Test-Path -LiteralPath $directory)) {
            New-Item -ItemType Directory -Path $directory -Force | Out-Null
        }
        Add-Content -LiteralPath $LogFile -Value $line -Encoding UTF8
    } catch {
        Write-Warning $line
    }
}

# "Not Present" (SCOM's default) and empty values both mean "no value".
function Test-Present {
    param([string] $Value)
    return -not ([string]::IsNullOrWhiteSpace($Value) -or $Value -eq 'Not Present' -or $Value -eq 'NotPresent')
}

# SCOM's TimeRaised is UTC, written in the management server's culture; ISO 8601 is unambiguous for the service.
# A value that does not read as a date is sent as it is.
function ConvertTo-IsoUtc {
    param([string] $Value)
    if (-not (Test-Present $Value)) { return 'Not Present' }
    $styles = [System.Globalization.DateTimeStyles]::AssumeUniversal -bor [System.Globalization.DateTimeStyles]::AdjustToUniversal
    $parsed = [DateTime]::MinValue
    foreach ($culture in @([System.Globalization.CultureInfo]::CurrentCulture, [System.Globalization.CultureInfo]::InvariantCulture)) {
        if ([DateTime]::TryParse($Value, $culture, $styles, [ref] $parsed)) {
            return $parsed.ToString('yyyy-MM-ddTHH:mm:ssZ', [System.Globalization.CultureInfo]::InvariantCulture)
        }
    }
    return $Value
}

# The value of an alert property read from SCOM, or the parameter's when SCOM has none.
function Select-Value {
    param($FromScom, [string] $Fallback)
    if ($null -eq $FromScom) { return $Fallback }
    $text = [string] $FromScom
    if (Test-Present $text) { return $text }
    return $Fallback
}

try {
    # --- The secret: a file, else the environment; never this script or the command line. ---
    $secret = $null
    if (Test-Path -LiteralPath $SecretFile -PathType Leaf) {
        $secret = (Get-Content -LiteralPath $SecretFile -Raw).Trim()
    } elseif (-not [string]::IsNullOrWhiteSpace($env:HSR_WEBHOOK_SECRET)) {
        $secret = $env:HSR_WEBHOOK_SECRET.Trim()
    }
    if ([string]::IsNullOrEmpty($secret) -or -not $secret.StartsWith('whsec_')) {
        throw "no webhook secret: put the whsec_ secret in $SecretFile or in the HSR_WEBHOOK_SECRET environment variable"
    }
    try {
        $key = [Convert]::FromBase64String($secret.Substring(6))
    } catch {
        throw "the webhook secret is not whsec_ followed by base64 (file $SecretFile or HSR_WEBHOOK_SECRET)"
    }

    # --- Optionally, the alert as SCOM holds it (no command-line quoting limits). ---
    if ($ReadAlertFromScom -and (Test-Present $AlertId)) {
        Import-Module OperationsManager -ErrorAction Stop
        $alert = Get-SCOMAlert -Id $AlertId.Trim('{}'.ToCharArray()) -ErrorAction Stop
        if ($null -ne $alert) {
            $AlertName = Select-Value $alert.Name $AlertName
            $AlertDescription = Select-Value $alert.Description $AlertDescription
            $ResolutionState = Select-Value $alert.ResolutionState $ResolutionState
            $Severity = Select-Value $alert.Severity $Severity
            $Priority = Select-Value $alert.Priority $Priority
            $Owner = Select-Value $alert.Owner $Owner
            $RepeatCount = Select-Value $alert.RepeatCount $RepeatCount
            $Category = Select-Value $alert.Category $Category
            $ManagedEntitySource = Select-Value $alert.MonitoringObjectDisplayName $ManagedEntitySource
            $ManagedEntityPath = Select-Value $alert.MonitoringObjectPath $ManagedEntityPath
            $ManagedEntityGuid = Select-Value $alert.MonitoringObjectId $ManagedEntityGuid
            $TicketId = Select-Value $alert.TicketId $TicketId
            if ($null -ne $alert.TimeRaised) {
                # SCOM keeps alert times in UTC; only a time marked local needs converting.
                $raised = [DateTime] $alert.TimeRaised
                if ($raised.Kind -eq [DateTimeKind]::Local) { $raised = $raised.ToUniversalTime() }
                $TimeRaised = $raised.ToString('yyyy-MM-ddTHH:mm:ssZ', [System.Globalization.CultureInfo]::InvariantCulture)
            }
            $CustomField1 = Select-Value $alert.CustomField1 $CustomField1
            $CustomField2 = Select-Value $alert.CustomField2 $CustomField2
            $CustomField3 = Select-Value $alert.CustomField3 $CustomField3
            $CustomField4 = Select-Value $alert.CustomField4 $CustomField4
            $CustomField5 = Select-Value $alert.CustomField5 $CustomField5
            $CustomField6 = Select-Value $alert.CustomField6 $CustomField6
            $CustomField7 = Select-Value $alert.CustomField7 $CustomField7
            $CustomField8 = Select-Value $alert.CustomField8 $CustomField8
            $CustomField9 = Select-Value $alert.CustomField9 $CustomField9
            $CustomField10 = Select-Value $alert.CustomField10 $CustomField10
        }
    }

    # --- The resolution state: Closed is 255 in every language. ---
    $state = $ResolutionStateName
    if ($ResolutionState.Trim() -eq '255') {
        $state = 'Closed'
    } elseif (-not (Test-Present $state)) {
        $state = $ResolutionState
    }

    # --- The body: SPEC section 4, the OpsGenie field set with camelCase keys. ---
    $payload = [ordered]@{
        alertId                     = $AlertId
        alertName                   = $AlertName
        alertDescription            = $AlertDescription
        resolutionState             = $state
        resolutionStateLastModified = $ResolutionStateLastModified
        priority                    = $Priority
        owner                       = $Owner
        repeatCount                 = $RepeatCount
        severity                    = $Severity
        category                    = $Category
        createdByMonitor            = $CreatedByMonitor
        managedEntitySource         = $ManagedEntitySource
        workflowId                  = $WorkflowId
        lastModified                = $LastModified
        timeRaised                  = (ConvertTo-IsoUtc $TimeRaised)
        ticketId                    = $TicketId
        dataItemCreateTime          = $DataItemCreateTime
        managedEntityPath           = $ManagedEntityPath
        managedEntityGUID           = $ManagedEntityGuid
        timeAdded                   = $TimeAdded
        mpElement                   = $MpElement
        customField1                = $CustomField1
        customField2                = $CustomField2
        customField3                = $CustomField3
        customField4                = $CustomField4
        customField5                = $CustomField5
        customField6                = $CustomField6
        customField7                = $CustomField7
        customField8                = $CustomField8
        customField9                = $CustomField9
        customField10               = $CustomField10
    }
    # Every value is a string: an empty one would read as absent anyway, so keep SCOM's own word for it.
    foreach ($name in @($payload.Keys)) {
        if ($null -eq $payload[$name] -or [string]::IsNullOrEmpty([string] $payload[$name])) { $payload[$name] = 'Not Present' }
    }
    $body = $payload | ConvertTo-Json -Compress
    # The exact bytes that are signed and sent. Windows PowerShell 5.1 would send a string body as ISO-8859-1.
    $bodyBytes = [System.Text.Encoding]::UTF8.GetBytes($body)
} catch {
    Write-Failure -Message ("healthset-responder SCOM channel could not run for alert {0}: {1}" -f $AlertId, $_.Exception.Message) -EventId 1003
    exit 3
}

# Windows PowerShell 5.1 offers TLS 1.0 only unless asked; an https:// Url needs TLS 1.2.
if ($Url.StartsWith('https:', [StringComparison]::OrdinalIgnoreCase)) {
    [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
}

# One id for this notification, kept across retries: the service answers a retry it already stored as a duplicate.
$webhookId = [guid]::NewGuid().ToString()
$epoch = New-Object DateTime 1970, 1, 1, 0, 0, 0, ([DateTimeKind]::Utc)
$hmac = New-Object System.Security.Cryptography.HMACSHA256
$hmac.Key = $key

$delay = $RetryDelaySeconds
for ($attempt = 1; $attempt -le $Attempts; $attempt++) {
    # A fresh timestamp, and so a fresh signature, for each attempt.
    $timestamp = [long][Math]::Floor(([DateTime]::UtcNow - $epoch).TotalSeconds)
    $signedContent = "$webhookId.$timestamp.$body"
    $signature = 'v1,' + [Convert]::ToBase64String($hmac.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($signedContent)))
    $headers = @{
        'webhook-id'        = $webhookId
        'webhook-timestamp' = [string] $timestamp
        'webhook-signature' = $signature
    }
    try {
        $answer = Invoke-RestMethod -Uri $Url -Method Post -ContentType 'application/json; charset=utf-8' -Headers $headers -Body $bodyBytes -TimeoutSec $TimeoutSeconds
        $dispositions = @($answer.alerts | ForEach-Object { $_.disposition }) -join ', '
        Write-Verbose ("alert {0} delivered as {1} (attempt {2}): {3}" -f $AlertId, $webhookId, $attempt, $dispositions)
        exit 0
    } catch {
        $status = 0
        $response = $null
        if ($null -ne $_.Exception -and ($_.Exception.PSObject.Properties.Name -contains 'Response')) {
            $response = $_.Exception.Response
        }
        if ($null -ne $response) {
            $status = [int] $response.StatusCode
        }
        $detail = $_.Exception.Message
        if ($null -ne $_.ErrorDetails -and -not [string]::IsNullOrEmpty($_.ErrorDetails.Message)) {
            # The service's JSON error, e.g. 422 naming the field it could not use; never holds a secret.
            $detail = $_.ErrorDetails.Message
            if ($detail.Length -gt 500) { $detail = $detail.Substring(0, 500) }
        }
        if ($status -ge 400 -and $status -lt 500) {
            # 400, 401, 413, 415, 422: sending the same thing again cannot help.
            Write-Failure -Message ("healthset-responder refused alert {0} ({1}) with HTTP {2}: {3}" -f $AlertId, $webhookId, $status, $detail) -EventId 1002
            exit 1
        }
        if ($attempt -ge $Attempts) {
            $what = 'connection failed'
            if ($status -gt 0) { $what = "HTTP $status" }
            Write-Failure -Message ("healthset-responder did not take alert {0} ({1}) after {2} attempts, last: {3}: {4}" -f $AlertId, $webhookId, $attempt, $what, $detail) -EventId 1001
            exit 2
        }
        Write-Verbose ("attempt {0} for alert {1} failed ({2}); retrying in {3} s" -f $attempt, $AlertId, $detail, $delay)
        Start-Sleep -Seconds $delay
        $delay = $delay * 2
    }
}
