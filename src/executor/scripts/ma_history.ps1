# Managed Availability's recovery actions, from the server's crimson log. Reading it remotely needs the Event Log
# Readers group on the server (or an equivalent right); the window is the lookback, by the events' creation time.
$filter = @{ LogName = 'Microsoft-Exchange-ManagedAvailability/RecoveryActionResults'; StartTime = (Get-Date).AddSeconds(-[int]{lookback_seconds}) }
try {
    $events = @(Get-WinEvent -ComputerName {server} -FilterHashtable $filter -ErrorAction Stop)
} catch {
    # Get-WinEvent reports an empty selection as an error: that is an empty answer, anything else is not.
    if ($_.FullyQualifiedErrorId -notlike 'NoMatchingEventsFound*') { throw }
    $events = @()
}
# Each event's fields are in Event.UserData.EventXML; the responder keeps the finished ones.
$result = @($events | ForEach-Object {
    $x = ([xml]$_.ToXml()).Event.UserData.EventXML
    [pscustomobject]@{
        Id = [string]$x.Id; ResourceName = [string]$x.ResourceName; RequestorName = [string]$x.RequestorName
        StartTime = [string]$x.StartTime; EndTime = [string]$x.EndTime; State = [string]$x.State; Result = [string]$x.Result
    }
})
