# cmdlets: Get-MailboxDatabaseCopyStatus
$result = @(Get-MailboxDatabaseCopyStatus -Server {server} | Group-Object Status | Select-Object Name, Count)
