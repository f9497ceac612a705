-- conf.lua: the LÖVE 11 settings of the loading-screen example (main.lua).
-- No sound, joystick, physics or video: the example needs a window and
-- graphics only, and so runs on a headless server under xvfb-run.
function love.conf(t)
  t.identity = "defer-loading"
  t.version = "11.0"
  t.console = false
  t.window.title = "defer: a backlog of assets through a semaphore"
  t.window.width = 640
  t.window.height = 200
  t.window.vsync = 1
  t.window.resizable = false
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end
