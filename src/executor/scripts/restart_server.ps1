Restart-Computer -ComputerName {server} -Force -Wait -For PowerShell -Timeout {restart_timeout_seconds} -Delay 5 | Out-Null
$result = [pscustomobject]@{ Server = {server}; Restarted = $true }
