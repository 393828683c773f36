# cmdlets: Get-MailboxServer, Set-MailboxServer, Move-ActiveMailboxDatabase
$result = Get-MailboxServer -Identity {server} | Select-Object Name, DatabaseCopyActivationDisabledAndMoveNow
Set-MailboxServer -Identity {server} -DatabaseCopyActivationDisabledAndMoveNow $true | Out-Null
$after = Get-MailboxServer -Identity {server}
if (-not $after.DatabaseCopyActivationDisabledAndMoveNow) { throw 'Set-MailboxServer did not disable database copy activation' }
# A later round of the same failover: the moves stalled, so move the remaining active copies explicitly.
if ([int]{attempt} -gt 1) { Move-ActiveMailboxDatabase -Server {server} -Confirm:$false | Out-Null }
