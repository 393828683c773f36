$deadline = (Get-Date).AddSeconds([int]{restart_timeout_seconds})
if (-not ($IsLinux -or $IsMacOS)) {
    Restart-Computer -ComputerName {server} -Force -Wait -For PowerShell -Timeout {restart_timeout_seconds} -Delay 5 | Out-Null
} else {
    # PowerShell on Linux has no Restart-Computer -ComputerName: ask the server over WinRM to restart itself, then
    # wait until it answers again with a later boot time.
    $bootTime = { (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime }
    $bootedBefore = Invoke-Command -ComputerName {server} -Authentication {authentication} -ScriptBlock $bootTime
    Invoke-Command -ComputerName {server} -Authentication {authentication} -ScriptBlock {
        shutdown.exe /r /f /t 10 /d p:0:0 /c 'healthset-responder restart_server'
        if ($LASTEXITCODE -ne 0) { throw ('shutdown.exe /r exited with code {0}' -f $LASTEXITCODE) }
    }
    $bootedAfter = $null
    while ($null -eq $bootedAfter -or $bootedAfter -eq $bootedBefore) {
        if ((Get-Date) -gt $deadline) { throw 'the server did not answer PowerShell remoting again within timing.restart_timeout' }
        Start-Sleep -Seconds 5
        try { $bootedAfter = Invoke-Command -ComputerName {server} -Authentication {authentication} -ScriptBlock $bootTime } catch { $bootedAfter = $null }
    }
}
# Windows answers before Exchange does: the next step needs the Exchange Management Shell, so wait for it too.
while ($true) {
    try {
        Remove-PSSession (New-PSSession -ConfigurationName Microsoft.Exchange -ConnectionUri {connection_uri} -Authentication {authentication})
        break
    } catch {
        if ((Get-Date) -gt $deadline) { throw $_ }
        Start-Sleep -Seconds 15
    }
}
$result = [pscustomobject]@{ Server = {server}; Restarted = $true }
